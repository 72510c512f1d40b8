using System.Diagnostics;
using System.Text.Json.Nodes;
using Multimodal.Tests.TestSupport;
using Xunit.Abstractions;

namespace Multimodal.Tests.Server;

/// <summary>The server app's <c>caption-batch</c> verb as a user runs it: killed mid-run and resumed, it ends with
/// every image exactly once and no torn line; three shards cover exactly what one unsharded run covers.</summary>
public sealed class CaptionBatchTests(ITestOutputHelper output)
{
    private static (TempDir Dir, string Images) ImageFolder(int count)
    {
        var dir = new TempDir();
        string images = Path.Combine(dir.Path, "images");
        Directory.CreateDirectory(Path.Combine(images, "sub"));
        var scenes = Directory.GetFiles(Path.Combine(Repo.Root, "samples", "images"), "scene*.png").Order(StringComparer.Ordinal).ToArray();
        for (int i = 0; i < count; i++)
            File.Copy(scenes[i % scenes.Length], Path.Combine(images, i % 5 == 0 ? "sub" : "", $"img{i:D3}.png"));
        File.WriteAllBytes(Path.Combine(images, "broken.png"), [0x89, 0x50, 0x4E, 0x47, 1, 2, 3]);
        return (dir, images);
    }

    private static (int Code, string Stdout, string Stderr) Run(params string[] args) =>
        Repo.Run(Repo.Dotnet, [KestrelServer.ServerDll, "caption-batch", .. args], Repo.Root, TimeSpan.FromMinutes(3));

    private static Dictionary<string, JsonNode> Lines(string path)
    {
        string text = File.ReadAllText(path);
        Assert.EndsWith("\n", text);
        var result = new Dictionary<string, JsonNode>();
        foreach (var line in text.Split('\n', StringSplitOptions.RemoveEmptyEntries))
        {
            var node = JsonNode.Parse(line)!;                                         // no torn line
            Assert.True(result.TryAdd((string)node["id"]!, node), $"{node["id"]} written twice");
        }
        return result;
    }

    [Fact]
    public void Killed_mid_run_and_resumed_it_writes_every_image_once_with_the_captions_of_an_uninterrupted_run()
    {
        var (dir, images) = ImageFolder(60);
        using var owned = dir;
        string whole = Path.Combine(dir.Path, "whole.jsonl"), resumed = Path.Combine(dir.Path, "resumed.jsonl");
        var (code, stdout, stderr) = Run("--input", images, "--output", whole, "--batch", "4");
        output.WriteLine(stdout + stderr);
        Assert.Equal(0, code);
        var expected = Lines(whole);
        Assert.Equal(61, expected.Count);
        Assert.Contains("error", expected["broken.png"].AsObject().Select(kv => kv.Key));
        Assert.Equal("sub/img000.png", expected.Keys.Order(StringComparer.Ordinal).First(k => k.StartsWith("sub/")));

        // Kill it once results are being written, leave a torn line as a crash mid-write would, then resume.
        var start = new ProcessStartInfo(Repo.Dotnet) { WorkingDirectory = Repo.Root, RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in new[] { KestrelServer.ServerDll, "caption-batch", "--input", images, "--output", resumed, "--batch", "1" }) start.ArgumentList.Add(a);
        using (var process = Process.Start(start)!)
        {
            var clock = Stopwatch.StartNew();
            while (!process.HasExited && (!File.Exists(resumed) || File.ReadAllLines(resumed).Length < 5) && clock.Elapsed < TimeSpan.FromMinutes(2))
                Thread.Sleep(20);
            process.Kill(entireProcessTree: true);
            process.WaitForExit();
        }
        int before = File.ReadAllLines(resumed).Length;
        File.AppendAllText(resumed, "{\"id\":\"img0");
        Assert.True(before < 61, $"the run finished ({before} lines) before it could be killed");
        (code, stdout, stderr) = Run("--input", images, "--output", resumed, "--resume", "--batch", "4");
        output.WriteLine($"killed after {before} lines; resume: {stdout}");
        Assert.Equal(0, code);
        var after = Lines(resumed);
        Assert.Equal(expected.Keys.Order(StringComparer.Ordinal), after.Keys.Order(StringComparer.Ordinal));
        foreach (var (id, line) in expected) Assert.Equal((string?)line["caption"], (string?)after[id]["caption"]);
        AssertKnownCaptions(after, 60);

        (code, _, stderr) = Run("--input", images, "--output", resumed);
        Assert.Equal(2, code);                                                           // refuses to append without --resume
        Assert.Contains("--resume", stderr);
    }

    /// <summary>Not only equal to another run: each copy of a scene that <see cref="ImageFolder"/> made has the caption
    /// the scene was drawn from.</summary>
    private static void AssertKnownCaptions(Dictionary<string, JsonNode> lines, int count)
    {
        var known = KnownCaptions();
        var scenes = Directory.GetFiles(Path.Combine(Repo.Root, "samples", "images"), "scene*.png").Order(StringComparer.Ordinal).Select(Path.GetFileName).ToArray();
        for (int i = 0; i < count; i++)
            Assert.Equal(known[scenes[i % scenes.Length]!], (string?)lines[(i % 5 == 0 ? "sub/" : "") + $"img{i:D3}.png"]["caption"]);
    }

    /// <summary>The captions samples/images/CAPTIONS.md says each scene was drawn from, which the model reproduces.</summary>
    private static Dictionary<string, string> KnownCaptions() =>
        File.ReadAllLines(Path.Combine(Repo.Root, "samples", "images", "CAPTIONS.md"))
            .Where(l => l.StartsWith("| `scene"))
            .Select(l => l.Split('|', StringSplitOptions.TrimEntries))
            .ToDictionary(c => c[1].Trim('`'), c => c[2]);

    [Fact]
    public void Damaged_images_of_every_kind_get_error_lines_while_the_good_ones_get_their_captions_in_a_new_folder()
    {
        using var dir = new TempDir();
        string images = Path.Combine(dir.Path, "images");
        Directory.CreateDirectory(images);
        var known = KnownCaptions();
        foreach (var scene in known.Keys) File.Copy(Path.Combine(Repo.Root, "samples", "images", scene), Path.Combine(images, scene));
        var hostile = HostileImages.All();
        foreach (var image in hostile) File.WriteAllBytes(Path.Combine(images, image.Name + ".png"), image.Bytes);
        Directory.CreateDirectory(Path.Combine(images, "a-folder.png"));
        Assert.Equal(0, Repo.Run("mkfifo", [Path.Combine(images, "a-fifo.png")], images, TimeSpan.FromSeconds(10)).ExitCode);
        // The output folder does not exist yet, as on a fresh volume.
        string results = Path.Combine(dir.Path, "results", "run-1", "part-0.jsonl");
        var (code, stdout, stderr) = Run("--input", images, "--output", results, "--batch", "4");
        output.WriteLine(stdout + stderr);
        Assert.Equal(0, code);
        var lines = Lines(results);
        foreach (var (scene, caption) in known)
            Assert.Equal(caption, (string?)lines[scene]["caption"]);
        foreach (var image in hostile)
            Assert.False(string.IsNullOrEmpty((string?)lines[image.Name + ".png"]["error"]), $"{image.Name} has no error line");
        Assert.Contains("a-fifo.png", lines.Keys);
        Assert.Equal(known.Count + hostile.Count + 1, lines.Count);
        Assert.Contains($"{known.Count} captioned, {hostile.Count + 1} failed", stdout);
    }

    [Fact]
    public void A_run_that_cannot_go_on_says_why_in_one_line()
    {
        using var dir = new TempDir();
        var (code, _, stderr) = Run("--input", Path.Combine(dir.Path, "missing"), "--output", Path.Combine(dir.Path, "out.jsonl"));
        output.WriteLine(stderr);
        Assert.Equal(1, code);
        Assert.Single(stderr.Trim().Split('\n'));
        Assert.StartsWith("caption-batch: ", stderr);
        File.WriteAllText(Path.Combine(dir.Path, "file"), "");
        (code, _, stderr) = Run("--input", Repo.Root + "/samples/images", "--output", Path.Combine(dir.Path, "file", "out.jsonl"));
        output.WriteLine(stderr);
        Assert.Equal(1, code);
        Assert.DoesNotContain("   at ", stderr);                                     // no stack trace
    }

    [Fact]
    public void Three_shards_cover_exactly_what_one_unsharded_run_covers()
    {
        var (dir, images) = ImageFolder(30);
        using var owned = dir;
        string whole = Path.Combine(dir.Path, "whole.jsonl");
        Assert.Equal(0, Run("--input", images, "--output", whole).Code);
        var union = new Dictionary<string, JsonNode>();
        for (int i = 0; i < 3; i++)
        {
            string part = Path.Combine(dir.Path, $"part{i}.jsonl");
            var (code, stdout, _) = Run("--input", images, "--output", part, "--shard", $"{i}/3");
            output.WriteLine(stdout);
            Assert.Equal(0, code);
            foreach (var (id, line) in Lines(part)) Assert.True(union.TryAdd(id, line), $"{id} in two shards");
        }
        var expected = Lines(whole);
        Assert.Equal(expected.Keys.Order(StringComparer.Ordinal), union.Keys.Order(StringComparer.Ordinal));
        foreach (var (id, line) in expected) Assert.Equal((string?)line["caption"], (string?)union[id]["caption"]);
        AssertKnownCaptions(union, 30);
        Assert.Equal(2, Run("--input", images, "--output", whole, "--shard", "3/3").Code);
    }
}
