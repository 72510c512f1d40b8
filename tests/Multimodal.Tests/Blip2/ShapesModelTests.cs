using System.Diagnostics;
using Multimodal.Tests.TestSupport;
using Multimodal.Train;
using Xunit.Abstractions;

namespace Multimodal.Tests.Blip2;

/// <summary>The small model the project trained (models/blip2-shapes), end to end: image drawing →
/// preprocessing → ViT → Q-Former → OPT → tokenizer → text, judged by exact caption matches on scenes
/// from a seed training never used, and through the sample executable.</summary>
public sealed class ShapesModelTests(ITestOutputHelper output)
{
    [Fact]
    public async Task The_default_model_captions_unseen_scenes_exactly()
    {
        var clock = Stopwatch.StartNew();
        var (accuracy, misses) = await Evaluate.ExactMatchAsync(Repo.ShapesModel, seed: 424242, count: 200);
        output.WriteLine($"exact-match accuracy on 200 unseen scenes: {accuracy:P1} in {clock.Elapsed.TotalSeconds:F1} s");
        foreach (var (expected, actual) in misses.Take(5)) output.WriteLine($"  expected \"{expected}\"\n  got      \"{actual}\"");
        Assert.True(accuracy >= 0.9, $"exact-match accuracy {accuracy:P1} < 90%");
    }

    [Fact]
    public void The_sample_prints_the_caption_of_a_shipped_scene()
    {
        var captions = File.ReadAllLines(Path.Combine(Repo.Root, "samples", "images", "CAPTIONS.md"));
        string expected = captions.First(l => l.Contains("scene1.png")).Split('|')[2].Trim();
        var (exitCode, stdout, stderr) = Repo.Run(Repo.Dotnet, [Repo.CaptionSample, Path.Combine("samples", "images", "scene1.png")],
            Repo.Root, TimeSpan.FromMinutes(2));
        output.WriteLine(stdout);
        Assert.True(exitCode == 0, $"exit code {exitCode}: {stderr}");
        Assert.Equal("", stderr);
        Assert.Contains(expected, stdout);
    }
}
