using Multimodal.Blip2;
using Multimodal.Flamingo;
using Multimodal.Idefics;
using Multimodal.Generation;
using Multimodal.Processing;
using Multimodal.Tests.TestSupport;
using TorchSharp;
using Xunit.Abstractions;

namespace Multimodal.Tests.Generation;

/// <summary>Each façade's documented concurrency: N concurrent calls on one instance give the ids of N
/// sequential calls; a stream the consumer abandons stops its generation and releases the façade.</summary>
[Collection(TimedCollection.Name)]
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
    internal static long LiveTensors()
    {
        GC.Collect();
        GC.WaitForPendingFinalizers();
        return torch.Tensor.TotalCount;
    }

    [Fact]
    public async Task Disposing_a_facade_waits_for_the_call_in_progress()
    {
        var blip2 = Blip2Captioner.FromPretrained(Repo.ShapesModel);
        // 256 captions of 40 tokens each: seconds of work, so Dispose certainly meets the call running.
        var images = Enumerable.Repeat(ImageDecoder.Decode(Repo.Scene1), 256).ToList();
        var options = new GenerationOptions { MinNewTokens = 40, MaxNewTokens = 40 };
        var running = Task.Run(() => blip2.CaptionAsync(images, Enumerable.Repeat("", 256).ToList(), options));
        await Task.Delay(100);
        Assert.False(running.IsCompleted, "the call ended before Dispose could meet it");
        var clock = System.Diagnostics.Stopwatch.StartNew();
        blip2.Dispose();                                        // must wait, not free the model under the running call
        // The call's own task completes through a continuation just after the gate lets Dispose go on: allow it a second,
        // far less than the seconds of work left had Dispose not waited.
        bool finished = await Task.WhenAny(running, Task.Delay(TimeSpan.FromSeconds(1))) == running;
        Assert.True(finished, $"Dispose returned after {clock.ElapsedMilliseconds} ms while the call was still running");
        output.WriteLine($"Dispose waited {clock.ElapsedMilliseconds} ms for the call in progress");
        var results = await running;
        Assert.All(results, r => Assert.Equal(40, r.OutputTokens));
        blip2.Dispose();                                        // a second dispose is harmless
    }
}

/// <summary>The model classes themselves hold no per-call state (the KV cache and media are per call), so
/// concurrent calls on one instance need no gate: 8 concurrent callers give the ids of 8 sequential calls.</summary>
public sealed class ModelConcurrencyTests(ITestOutputHelper output)
{
    /// <summary>The ids of a generation, as one comparable string; disposes the output.</summary>
    private static string Ids(GenerationOutput output)
    {
        using (output) return string.Join(",", output.Sequences.SelectMany(s => s));
    }

    private static void EightAtOnce(Func<int, string> call, ITestOutputHelper output, string name)
    {
        var sequential = Enumerable.Range(0, 8).Select(call).ToList();
        var concurrent = Task.WhenAll(Enumerable.Range(0, 8).Select(i => Task.Run(() => call(i)))).GetAwaiter().GetResult();
        Assert.Equal(sequential, concurrent);
        output.WriteLine($"{name}: 8 concurrent calls = 8 sequential calls");
    }

    [Fact]
    public void Eight_concurrent_callers_on_each_model_class_equal_sequential_calls()
    {
        using var blip2 = Blip2ForConditionalGeneration.FromPretrained(FixtureCase.Get("blip2-opt").Path);
        using var br = FixtureCase.Get("blip2-opt").OpenReference();
        using var pixels = br.Read("pixel_values");
        using var ids = br.Read("input_ids");
        using var mask = br.Read("attention_mask");
        GenerationOptions Options(int i) => new() { MaxNewTokens = 4 + i % 3, NumBeams = 1 + i % 2 };
        EightAtOnce(i => Ids(blip2.Generate(pixels, ids, mask, Options(i))), output, "Blip2ForConditionalGeneration");

        using var flamingo = FlamingoModel.FromPretrained(FixtureCase.Get("openflamingo").Path);
        using var fr = FixtureCase.Get("openflamingo").OpenReference();
        using var visionX = fr.Read("vision_x");
        using var langX = fr.Read("lang_x");
        using var fmask = fr.Read("attention_mask");
        EightAtOnce(i => Ids(flamingo.Generate(visionX, langX, fmask, Options(i))), output, "FlamingoModel");

        using var idefics = IdeficsForVisionText2Text.FromPretrained(FixtureCase.Get("idefics").Path);
        using var ir = FixtureCase.Get("idefics").OpenReference();
        using var iids = ir.Read("input_ids");
        using var imask = ir.Read("attention_mask");
        using var ipixels = ir.Read("pixel_values");
        using var rows = ir.Read("image_attention_mask");
        EightAtOnce(i => Ids(idefics.Generate(iids, imask, ipixels, rows, Options(i))), output, "IdeficsForVisionText2Text");

        using var itm = Blip2ForImageTextRetrieval.FromPretrained(FixtureCase.Get("blip2-itm").Path);
        using var tr = FixtureCase.Get("blip2-itm").OpenReference();
        using var tpixels = tr.Read("itm_pixel_values");
        using var tids = tr.Read("itm_input_ids");
        using var tmask = tr.Read("itm_attention_mask");
        EightAtOnce(_ =>
        {
            using var m = itm.ImageTextMatching(tpixels, tids, tmask);
            return string.Join(",", m.Logits.data<float>().ToArray().Select(v => v.ToString("R")));
        }, output, "Blip2ForImageTextRetrieval");
    }

    [Fact]
    public async Task A_thousand_mixed_generations_leave_no_tensor_behind()
    {
        using var folder = Blip2.Blip2CaptionerTests.MakeFolder("blip2-opt");
        using var blip2 = Blip2Captioner.FromPretrained(folder.Path);
        var image = ImageDecoder.Decode(Path.Combine(AppContext.BaseDirectory, "Images", "chelsea.png"));
        int cancelled = 0;
        async Task Mixed(int i)
        {
            switch (i % 4)
            {
                case 0:
                    await blip2.CaptionAsync(image, new GenerationOptions { MaxNewTokens = 6, MinNewTokens = 6 });
                    break;
                case 1:
                    await blip2.CaptionAsync(image, new GenerationOptions { MaxNewTokens = 6, NumBeams = 2 });
                    break;
                case 2:
                    await foreach (var _ in blip2.CaptionStreamAsync(image, "", new GenerationOptions { MaxNewTokens = 6 })) { }
                    break;
                default:
                    // Cancelled after its third token: the KV cache holds the prompt and three steps by then.
                    using (var cancel = new CancellationTokenSource())
                    {
                        int seen = 0;
                        try
                        {
                            await foreach (var chunk in blip2.StreamRawPromptAsync(image, "", new GenerationOptions { MaxNewTokens = 10, MinNewTokens = 10 }, cancel.Token))
                                if (chunk.Text.Length > 0 && ++seen == 3) cancel.Cancel();
                        }
                        catch (OperationCanceledException)
                        {
                            cancelled++;
                        }
                    }
                    break;
            }
        }
        for (int i = 0; i < 8; i++) await Mixed(i);
        long before = FacadeConcurrencyTests.LiveTensors();
        cancelled = 0;
        for (int i = 0; i < 1000; i++) await Mixed(i);
        long after = FacadeConcurrencyTests.LiveTensors();
        output.WriteLine($"live tensors before {before}, after 1,000 mixed generations {after} ({cancelled} cancelled mid-stream)");
        Assert.Equal(250, cancelled);                                    // every fourth call was really cancelled
        Assert.Equal(before, after);
    }
}
