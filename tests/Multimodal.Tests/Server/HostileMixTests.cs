using System.Text.Json.Nodes;
using Multimodal.Tests.TestSupport;
using Xunit.Abstractions;

namespace Multimodal.Tests.Server;

/// <summary>A small run of the benchmark's hostile mix (samples/Multimodal.Benchmarks --hostile-mix): for 15 s, 4 clients
/// caption the sample scenes while 2 send decompression bombs, 19 MB texts, malformed JSON, slow bodies, wrong keys,
/// wrong content types and invalid UTF-8 to the server process on loopback.</summary>
public sealed class HostileMixTests(ITestOutputHelper output)
{
    [Fact]
    public void Under_a_hostile_mix_good_clients_get_their_captions_and_nothing_is_a_server_error()
    {
        string dll = Directory.EnumerateFiles(Path.Combine(Repo.Root, "samples", "Multimodal.Benchmarks", "bin"), "Multimodal.Benchmarks.dll", SearchOption.AllDirectories)
            .Where(p => p.Contains("net10.0")).OrderByDescending(File.GetLastWriteTimeUtc).First();
        var (code, stdout, stderr) = Repo.Run(Repo.Dotnet, [dll, "--hostile-mix", "1", "--seconds", "15", "--good", "4", "--hostile", "2"], Repo.Root,
            TimeSpan.FromMinutes(4));
        output.WriteLine(string.Join('\n', stdout.Split('\n').Where(l => !l.StartsWith("  server:"))) + stderr);
        Assert.Equal(0, code);
        var figures = JsonNode.Parse(stdout.Trim().Split('\n')[^1])!;
        Assert.False((bool)figures["crashed"]!);
        Assert.Equal(0, (int)figures["server_errors"]!);
        Assert.True((int)figures["good"]! > 0);
        Assert.Equal((int)figures["good"]!, (int)figures["good_correct"]!);           // every good request got its scene's caption
        var byKind = figures["hostile_by_kind"]!.AsObject();
        Assert.Equal(8, byKind.Count);                                                 // every attack was sent
        foreach (var (kind, statuses) in byKind)
            foreach (var (status, _) in statuses!.AsObject())
                Assert.True(int.Parse(status) is (>= 400 and < 500) || (kind.StartsWith("bomb just under") && status == "200"), $"{kind}: {status}");
    }
}
