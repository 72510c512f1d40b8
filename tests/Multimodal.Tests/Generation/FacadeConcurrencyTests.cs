using Multimodal.Blip2;
using Multimodal.Flamingo;
using Multimodal.Generation;
using Multimodal.Processing;
using Multimodal.Tests.TestSupport;
using TorchSharp;
using Xunit.Abstractions;

namespace Multimodal.Tests.Generation;

/// <summary>Each façade's documented concurrency: N concurrent calls on one instance give the ids of N
/// sequential calls; a stream the consumer abandons stops its generation and releases the façade.</summary>
public sealed class FacadeConcurrencyTests(ITestOutputHelper output)
{
    private static readonly string[] Scenes = ["scene1.png", "scene2.png", "scene3.png", "scene4.png"];

    [Fact]
    public async Task Concurrent_captions_equal_sequential_ones()
    {
        using var blip2 = Blip2Captioner.FromPretrained(Repo.ShapesModel);
        var images = Scenes.Select(s => ImageDecoder.Decode(Path.Combine(Repo.Root, "samples", "images", s))).ToArray();
        var calls = Enumerable.Range(0, 8).Select(i => (Image: images[i % 4], Options: new GenerationOptions { NumBeams = 1 + i % 2 })).ToArray();
        var sequential = new List<IReadOnlyList<long>>();
        foreach (var (image, options) in calls) sequential.Add((await blip2.CaptionAsync(image, options)).Ids);
        var concurrent = await Task.WhenAll(calls.Select(c => Task.Run(() => blip2.CaptionAsync(c.Image, c.Options))));
        for (int i = 0; i < calls.Length; i++) Assert.Equal(sequential[i], concurrent[i].Ids);
        var streamed = await Task.WhenAll(images.Select(image => Task.Run(async () => string.Concat(await blip2.CaptionStreamAsync(image).ToListAsync()))));
        for (int i = 0; i < images.Length; i++) Assert.Equal((await blip2.CaptionAsync(images[i])).Text, streamed[i].Trim());
    }

    [Fact]
    public async Task Concurrent_retrievals_and_flamingo_generations_equal_sequential_ones()
    {
        using var folder = Blip2.Blip2RetrieverTests.MakeFolder();
        using var retriever = Blip2Retriever.FromPretrained(folder.Path);
        var image = ImageDecoder.Decode(Path.Combine(AppContext.BaseDirectory, "Images", "chelsea.png"));
        string[] texts = ["a cat", "a red car", "the dog on the sofa", "snow"];
        var sequential = new List<float[]>();
        foreach (var t in texts) sequential.Add(await retriever.MatchAsync(image, [t]));
        var concurrent = await Task.WhenAll(texts.Select(t => Task.Run(() => retriever.MatchAsync(image, [t]))));
        for (int i = 0; i < texts.Length; i++) Assert.Equal(sequential[i], concurrent[i]);

        using var flamingoFolder = TempDir.CopyOf(FixtureCase.Get("openflamingo").Path);
        FlamingoTokenizer.WriteFiftySymbols(flamingoFolder.Path);
        using var pipeline = FlamingoPipeline.FromPretrained(flamingoFolder.Path);
        var prompts = new[] { "AB", "C", "DEF", "G" }.Select(t => InterleavedPrompt.Create().Image(image).Text(t)).ToArray();
        var options = new GenerationOptions { MaxNewTokens = 5 };
        var alone = new List<IReadOnlyList<long>>();
        foreach (var p in prompts) alone.Add((await pipeline.GenerateAsync(p, options)).Ids);
        var together = await Task.WhenAll(prompts.Select(p => Task.Run(() => pipeline.GenerateAsync(p, options))));
        for (int i = 0; i < prompts.Length; i++) Assert.Equal(alone[i], together[i].Ids);
    }

    [Fact]
    public async Task An_abandoned_stream_stops_its_generation_and_releases_the_facade()
    {
        using var blip2 = Blip2Captioner.FromPretrained(Repo.ShapesModel);
        var image = ImageDecoder.Decode(Repo.Scene1);
        var expected = await blip2.CaptionAsync(image);
        long before = LiveTensors();
        for (int round = 0; round < 5; round++)
        {
            int seen = 0;
            await foreach (var piece in blip2.CaptionStreamAsync(image))
                if (++seen == 2) break;                        // the consumer stops early
            using var cancel = new CancellationTokenSource();
            await Assert.ThrowsAnyAsync<OperationCanceledException>(async () =>
            {
                await foreach (var piece in blip2.CaptionStreamAsync(image, cancellationToken: cancel.Token)) cancel.Cancel();
            });
        }
        // The gate was released each time: a normal call still gets the same caption.
        var again = await blip2.CaptionAsync(image);
        Assert.Equal(expected.Ids, again.Ids);
        long after = LiveTensors();
        output.WriteLine($"live tensors before {before}, after {after}");
        Assert.Equal(before, after);
    }

    // Tensors alive in the process (tests run one at a time); unreachable ones are finalized first.
    private static long LiveTensors()
    {
        GC.Collect();
        GC.WaitForPendingFinalizers();
        return torch.Tensor.TotalCount;
    }

    [Fact]
    public async Task Disposing_a_facade_waits_for_the_call_in_progress()
    {
        var blip2 = Blip2Captioner.FromPretrained(Repo.ShapesModel);
        var images = Enumerable.Repeat(ImageDecoder.Decode(Repo.Scene1), 16).ToList();
        var running = blip2.CaptionAsync(images, Enumerable.Repeat("", 16).ToList());
        await Task.Delay(50);
        blip2.Dispose();                                        // must not free the model under the running call
        var results = await running;
        Assert.All(results, r => Assert.Equal(FinishReason.EndOfSequence, r.FinishReason));
        blip2.Dispose();                                        // a second dispose is harmless
    }
}
