using Multimodal.Blip2;
using Multimodal.Generation;
using Multimodal.Processing;
using Multimodal.Tests.TestSupport;
using Xunit.Abstractions;

namespace Multimodal.Tests.Generation;

/// <summary>Dynamic batching in <see cref="Blip2Captioner"/>: concurrent calls run as batches and each gets
/// exactly what it gets alone.</summary>
public sealed class DynamicBatchingTests(ITestOutputHelper output)
{
    private static readonly DecodedImage[] Scenes = Directory.GetFiles(Path.Combine(Repo.Root, "samples", "images"), "scene*.png")
        .Order(StringComparer.Ordinal).Select(p => ImageDecoder.Decode(p)).ToArray();

    private static readonly (DecodedImage Image, string Prompt, GenerationOptions Options)[] Calls =
        Enumerable.Range(0, 12).Select(i => (Scenes[i % Scenes.Length], i % 3 == 1 ? "a" : "",
            i % 4 == 3 ? new GenerationOptions { MaxNewTokens = 4 } : new GenerationOptions())).ToArray();

    [Fact]
    public async Task Concurrent_calls_are_batched_and_each_gets_what_it_gets_alone()
    {
        List<TextResult> alone;
        using (var sequential = Blip2Captioner.FromPretrained(Repo.ShapesModel))
        {
            alone = [];
            foreach (var (image, prompt, options) in Calls) alone.Add(await sequential.CaptionAsync(image, prompt, options));
        }
        // The batching captioner owns the loaded model (disposing it frees the model).
        var loaded = Blip2Captioner.FromPretrained(Repo.ShapesModel);
        using var batched = new Blip2Captioner(loaded.Model, loaded.Processor) { Batching = new BatchingOptions(MaxBatchSize: 8, MaxWait: TimeSpan.FromMilliseconds(300)) };
        var together = await Task.WhenAll(Calls.Select(c => Task.Run(() => batched.CaptionAsync(c.Image, c.Prompt, c.Options))));
        EachAsAlone("BLIP-2", batched.LargestBatch, alone, together);
    }

    [Fact]
    public async Task Streamed_and_plain_calls_share_batches_and_each_stream_gives_what_it_gives_alone()
    {
        var calls = Calls.Take(8).ToArray();
        List<TextResult> alone = [];
        List<string> aloneStreamed = [];
        using (var sequential = Blip2Captioner.FromPretrained(Repo.ShapesModel))
            foreach (var (image, prompt, options) in calls)
            {
                alone.Add(await sequential.CaptionAsync(image, prompt, options));
                var text = new System.Text.StringBuilder();
                await foreach (var piece in sequential.CaptionStreamAsync(image, prompt, options)) text.Append(piece);
                aloneStreamed.Add(text.ToString());
            }
        var loaded = Blip2Captioner.FromPretrained(Repo.ShapesModel);
        using var batched = new Blip2Captioner(loaded.Model, loaded.Processor) { Batching = new BatchingOptions(MaxBatchSize: 8, MaxWait: TimeSpan.FromMilliseconds(300)) };
        // Even calls stream, odd ones do not; one more stream is abandoned after its first piece.
        var abandoned = Task.Run(async () =>
        {
            await foreach (var chunk in batched.StreamAsync(Scenes[0]))
                if (chunk.Text.Length > 0) return chunk.Text;
            return "";
        });
        var together = await Task.WhenAll(calls.Select((c, i) => Task.Run(async () =>
        {
            if (i % 2 == 1) return (Text: (string?)null, Result: await batched.CaptionAsync(c.Image, c.Prompt, c.Options));
            var text = new System.Text.StringBuilder();
            TextResult? result = null;
            await foreach (var chunk in batched.StreamRawPromptAsync(c.Image, c.Prompt, c.Options))
            {
                text.Append(chunk.Text);
                result = chunk.Result ?? result;
            }
            return (Text: text.ToString(), Result: result!);
        })));
        Assert.NotEmpty(await abandoned);
        output.WriteLine($"{calls.Length} calls (4 streamed) + 1 abandoned stream, largest batch {batched.LargestBatch}");
        Assert.True(batched.LargestBatch > 1, "nothing was batched");
        for (int i = 0; i < calls.Length; i++)
        {
            Assert.Equal(alone[i].Ids, together[i].Result.Ids);
            Assert.Equal(alone[i].Text, together[i].Result.Text);
            Assert.Equal(alone[i].FinishReason, together[i].Result.FinishReason);
            if (together[i].Text is string streamed) Assert.Equal(aloneStreamed[i], streamed);   // piece for piece, untrimmed
        }
        // The batcher is free again: a later call is answered.
        Assert.Equal(alone[0].Ids, (await batched.CaptionAsync(calls[0].Image, calls[0].Prompt, calls[0].Options)).Ids);
    }

    [Fact]
    public async Task A_row_completed_early_answers_its_call_while_the_batch_runs_on()
    {
        var release = new TaskCompletionSource();
        using var batcher = new DynamicBatcher<string, string>(new BatchingOptions(4, TimeSpan.FromMilliseconds(300)), _ => "same",
            async run =>
            {
                run.CompleteRow(0, run.Items[0] + " (early)");
                await release.Task;   // the rest of the batch is still generating
                return run.Items.Select(item => item + " (at the end)").ToList();
            });
        var first = batcher.RunAsync("short", default);
        var second = batcher.RunAsync("long", default);
        Assert.Equal("short (early)", await first.WaitAsync(TimeSpan.FromSeconds(30)));
        Assert.False(second.IsCompleted, "the long call cannot be done before its batch is");
        release.SetResult();
        Assert.Equal("long (at the end)", await second);
        Assert.Equal("short (early)", await first);   // the first answer stands
        Assert.Equal(2, batcher.LargestBatch);
    }

    [Fact]
    public async Task A_call_cancelled_while_waiting_leaves_the_others_and_a_bad_option_fails_only_its_call()
    {
        var loaded = Blip2Captioner.FromPretrained(Repo.ShapesModel);
        using var captioner = new Blip2Captioner(loaded.Model, loaded.Processor) { Batching = new BatchingOptions(4, TimeSpan.FromMilliseconds(300)) };
        using var cancel = new CancellationTokenSource();
        var kept = captioner.CaptionAsync(Scenes[0]);
        var dropped = captioner.CaptionAsync(Scenes[1], "", null, cancel.Token);
        cancel.Cancel();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => dropped);
        await Assert.ThrowsAnyAsync<ArgumentException>(() => captioner.CaptionAsync(Scenes[2], new GenerationOptions { Temperature = -1, DoSample = true }));
        var result = await kept;
        Assert.Equal((await loaded.CaptionAsync(Scenes[0])).Ids, result.Ids);
    }

    // InstructBLIP over Vicuna (left padding, positions from the mask) and over Flan-T5 (encoder-decoder): each row of a
    // batch of concurrent calls, streamed or not, with different instructions and lengths, equals the call alone.
    [Theory]
    [InlineData("vicuna")]
    [InlineData("t5")]
    public async Task InstructBLIP_batches_concurrent_calls_and_each_gets_what_it_gets_alone(string language)
    {
        using var folder = language == "vicuna" ? InstructBlipFolder.Create() : InstructBlipT5Folder.Create();
        var calls = Enumerable.Range(0, 8).Select(i => (Image: Scenes[i % Scenes.Length],
            Instruction: i % 3 == 0 ? "What is in the picture?" : i % 3 == 1 ? "Describe it." : "Which colour is the largest shape here?",
            Options: new GenerationOptions { MaxNewTokens = i % 2 == 0 ? 6 : 3 })).ToArray();
        List<TextResult> alone = [];
        using (var sequential = Multimodal.InstructBlip.InstructBlipCaptioner.FromPretrained(folder.Path))
            foreach (var (image, instruction, options) in calls) alone.Add(await sequential.AskAsync(image, instruction, options));
        using var batched = Multimodal.InstructBlip.InstructBlipCaptioner.FromPretrained(folder.Path,
            batching: new BatchingOptions(MaxBatchSize: 8, MaxWait: TimeSpan.FromMilliseconds(300)));
        var together = await Concurrently(calls.Length, i => i % 2 == 1,
            i => batched.AskAsync(calls[i].Image, calls[i].Instruction, calls[i].Options),
            i => batched.StreamAsync(calls[i].Image, calls[i].Instruction, calls[i].Options));
        EachAsAlone($"InstructBLIP-{language}", batched.LargestBatch, alone, together);
    }

    // Runs every call at once: some whole, the others streamed (their result is the stream's last chunk).
    private static Task<TextResult[]> Concurrently(int count, Func<int, bool> whole, Func<int, Task<TextResult>> run,
        Func<int, IAsyncEnumerable<TextChunk>> stream) =>
        Task.WhenAll(Enumerable.Range(0, count).Select(i => Task.Run(async () =>
        {
            if (whole(i)) return await run(i);
            TextResult? result = null;
            await foreach (var chunk in stream(i)) result = chunk.Result ?? result;
            return result!;
        })));

    private void EachAsAlone(string what, int largestBatch, IReadOnlyList<TextResult> alone, IReadOnlyList<TextResult> together)
    {
        output.WriteLine($"{what}: {alone.Count} concurrent calls, largest batch {largestBatch}");
        Assert.True(largestBatch > 1, "nothing was batched");
        for (int i = 0; i < alone.Count; i++)
        {
            output.WriteLine($"  {string.Join(" ", alone[i].Ids)} | {string.Join(" ", together[i].Ids)} ({together[i].FinishReason})");
            Assert.Equal(alone[i].Ids, together[i].Ids);
            Assert.Equal(alone[i].Text, together[i].Text);
            Assert.Equal(alone[i].FinishReason, together[i].FinishReason);
            Assert.Equal(alone[i].InputTokens, together[i].InputTokens);
            Assert.Equal(alone[i].OutputTokens, together[i].OutputTokens);
        }
    }

    // OpenFlamingo (over MPT, and over LLaMA with its BOS) and IDEFICS: prompts of different lengths are left-padded in
    // one batch; prompts with another image count wait for a batch of their own; streamed or not, each equals its call alone.
    [Theory]
    [InlineData("openflamingo")]
    [InlineData("openflamingo-llama")]
    [InlineData("idefics")]
    public async Task Interleaved_families_batch_concurrent_calls_and_each_gets_what_it_gets_alone(string family)
    {
        using var folder = family switch
        {
            "openflamingo" => OpenFlamingoWithFiftySymbols(),
            "openflamingo-llama" => FlamingoLlamaFolder.Create(),
            _ => IdeficsFolder.Create(),
        };
        string[] texts = family == "openflamingo" ? ["AB", "ABCAB", "C", "BBA"] : ["An image of", "A photo of two", "What", "Question: what is it? Answer:"];
        var calls = Enumerable.Range(0, 8).Select(i =>
        {
            var prompt = i == 5
                ? InterleavedPrompt.FewShot([(Scenes[1], texts[0] + ".")], Scenes[2], texts[1])    // two images: a batch of its own
                : InterleavedPrompt.FewShot([], Scenes[i % Scenes.Length], texts[i % texts.Length]);
            return (Prompt: prompt, Options: new GenerationOptions { MaxNewTokens = i % 2 == 0 ? 6 : 4 });
        }).ToArray();
        List<TextResult> alone = [];
        using (var sequential = (InterleavedPipeline)Multimodal.VisionLanguageModel.FromPretrained(folder.Path))
            foreach (var (prompt, options) in calls) alone.Add(await sequential.GenerateAsync(prompt, options));
        using var batched = (InterleavedPipeline)Multimodal.VisionLanguageModel.FromPretrained(folder.Path,
            batching: new BatchingOptions(MaxBatchSize: 8, MaxWait: TimeSpan.FromMilliseconds(300)));
        var together = await Concurrently(calls.Length, i => i % 2 == 1,
            i => batched.GenerateAsync(calls[i].Prompt, calls[i].Options), i => batched.StreamAsync(calls[i].Prompt, calls[i].Options));
        EachAsAlone(family, batched.LargestBatch, alone, together);
    }

    private static TempDir OpenFlamingoWithFiftySymbols()
    {
        var folder = TempDir.CopyOf(FixtureCase.Get("openflamingo").Path);
        FlamingoTokenizer.WriteFiftySymbols(folder.Path);
        return folder;
    }
}
