using System.Diagnostics;
using Multimodal.Train;
using Xunit.Abstractions;

namespace Multimodal.Tests.Blip2;

/// <summary>The small model the project trained (models/blip2-shapes), end to end: image drawing →
/// preprocessing → ViT → Q-Former → OPT → tokenizer → text, judged by exact caption matches on scenes
/// from a seed training never used, and through the sample executable.</summary>
public sealed class ShapesModelTests(ITestOutputHelper output)
{
    private static string RepoRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "Multimodal.sln"))) return dir.FullName;
        throw new DirectoryNotFoundException("The repository root (Multimodal.sln) was not found above the test output.");
    }

    [Fact]
    public async Task The_default_model_captions_unseen_scenes_exactly()
    {
        var clock = Stopwatch.StartNew();
        var (accuracy, misses) = await Evaluate.ExactMatchAsync(Path.Combine(RepoRoot(), "models", "blip2-shapes"), seed: 424242, count: 200);
        output.WriteLine($"exact-match accuracy on 200 unseen scenes: {accuracy:P1} in {clock.Elapsed.TotalSeconds:F1} s");
        foreach (var (expected, actual) in misses.Take(5)) output.WriteLine($"  expected \"{expected}\"\n  got      \"{actual}\"");
        Assert.True(accuracy >= 0.9, $"exact-match accuracy {accuracy:P1} < 90%");
        Assert.True(clock.Elapsed < TimeSpan.FromMinutes(2), $"the evaluation took {clock.Elapsed.TotalSeconds:F0} s, over the 2 minutes allowed");
    }

    [Fact]
    public void The_sample_prints_the_caption_of_a_shipped_scene()
    {
        string root = RepoRoot();
        var sample = Directory.EnumerateFiles(Path.Combine(root, "samples", "Multimodal.Caption", "bin"), "Multimodal.Caption.dll", SearchOption.AllDirectories)
            .Where(p => p.Contains("net10.0")).OrderByDescending(File.GetLastWriteTimeUtc).First();
        var captions = File.ReadAllLines(Path.Combine(root, "samples", "images", "CAPTIONS.md"));
        string expected = captions.First(l => l.Contains("scene1.png")).Split('|')[2].Trim();
        // The SDK tells test hosts which dotnet runs them; PATH is the fallback.
        var start = new ProcessStartInfo(Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") ?? "dotnet", [sample, Path.Combine("samples", "images", "scene1.png")])
        {
            WorkingDirectory = root,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        using var process = Process.Start(start)!;
        string stdout = process.StandardOutput.ReadToEnd();
        string stderr = process.StandardError.ReadToEnd();
        Assert.True(process.WaitForExit(120_000), "the sample did not finish in 2 minutes");
        output.WriteLine(stdout);
        Assert.True(process.ExitCode == 0, $"exit code {process.ExitCode}: {stderr}");
        Assert.Contains(expected, stdout);
    }
}
