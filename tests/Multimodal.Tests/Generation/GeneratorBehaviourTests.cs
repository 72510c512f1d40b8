using Multimodal.Blip2;
using Multimodal.Generation;
using Multimodal.Language;
using Multimodal.Tests.TestSupport;
using TorchSharp;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace Multimodal.Tests.Generation;

/// <summary>Generator behaviour beyond the reference runs: row independence, cache, sampling seeds,
/// limits, stop conditions, option checks and memory.</summary>
public sealed class GeneratorBehaviourTests(ITestOutputHelper output) : IDisposable
{
    private readonly Blip2ForConditionalGeneration _model = Blip2ForConditionalGeneration.FromPretrained(Path.Combine(FixtureCase.BuiltInRoot, "blip2-opt"));
    private readonly Multimodal.Loading.SafetensorsFile _reference = FixtureCase.Get("blip2-opt").OpenReference();

    public void Dispose()
    {
        _model.Dispose();
        _reference.Dispose();
    }

    private GenerationOutput Run(GenerationOptions options, int? onlyRow = null)
    {
        using var scope = NewDisposeScope();
        var pixels = _reference.Read("pixel_values");
        var ids = _reference.Read("input_ids");
        var mask = _reference.Read("attention_mask");
        if (onlyRow is int r)
        {
            // The row alone, without the padding columns the batch needed.
            var keep = mask[r].nonzero().squeeze(1);
            pixels = pixels[r].unsqueeze(0);
            ids = ids[r].index_select(0, keep).unsqueeze(0);
            mask = mask[r].index_select(0, keep).unsqueeze(0);
        }
        return _model.Generate(pixels, ids, mask, options);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(3)]
    public void A_row_gives_the_same_ids_alone_as_in_a_padded_batch(int beams)
    {
        var options = new GenerationOptions { MaxNewTokens = 10, NumBeams = beams, RepetitionPenalty = 2.0 };
        using var batch = Run(options);
        for (int r = 0; r < 2; r++)
        {
            using var alone = Run(options, r);
            var batchRow = batch.Sequences[r].Take(alone.Sequences[0].Length).ToArray();
            output.WriteLine($"beams {beams}, row {r}: batch {string.Join(" ", batch.Sequences[r])} / alone {string.Join(" ", alone.Sequences[0])}");
            Assert.Equal(alone.Sequences[0], batchRow);
            Assert.Equal(alone.Scores[0], batch.Scores[r], 4);
        }
    }

    [Fact]
    public void Cache_on_and_off_give_the_same_ids_and_scores()
    {
        var options = new GenerationOptions { MaxNewTokens = 10, RepetitionPenalty = 2.0, OutputScores = true };
        using var cached = Run(options);
        using var uncached = Run(options with { UseCache = false });
        Assert.Equal(cached.Sequences, uncached.Sequences);
        TensorAssert.Close(uncached.StepScores!, cached.StepScores!, "cached vs uncached scores", output, tolerance: 1e-5);
    }

    [Fact]
    public void With_the_cache_each_step_after_the_prompt_feeds_one_position()
    {
        var counting = new CountingModel(_model.LanguageModel);
        using var scope = NewDisposeScope();
        using var inference = inference_mode();
        var embeds = randn(2, 6, 32);
        var mask = ones(2, 6, ScalarType.Int64);
        var request = new GenerationRequest
        {
            Model = counting, PromptEmbeds = embeds, PromptMask = mask, Call = GenerationCall.Resolve(null, null), MaxNewTokens = 8, Eos = [-1], Pad = 1,
        };
        using var result = Multimodal.Generation.Generator.Generate(request);
        output.WriteLine("positions fed per step: " + string.Join(", ", counting.Lengths));
        Assert.Equal([6L, 1, 1, 1, 1, 1, 1, 1], counting.Lengths);
    }

    [Fact]
    public void Sampling_with_a_seed_is_reproducible_and_the_seed_matters()
    {
        var options = new GenerationOptions { MaxNewTokens = 10, DoSample = true, Seed = 7, TopK = 20, TopP = 0.9, Temperature = 1.5 };
        using var a = Run(options);
        using var b = Run(options);
        Assert.Equal(a.Sequences, b.Sequences);
        var differs = Enumerable.Range(1, 5).Any(seed =>
        {
            using var c = Run(options with { Seed = (ulong)(100 + seed) });
            return !c.Sequences.SelectMany(x => x).SequenceEqual(a.Sequences.SelectMany(x => x));
        });
        Assert.True(differs, "five other seeds all gave the same sample");
    }

    [Fact]
    public void Min_new_tokens_forbids_eos_and_eos_ids_end_rows()
    {
        var baseline = new GenerationOptions { MaxNewTokens = 10, RepetitionPenalty = 2.0 };
        using var free = Run(baseline);
        Assert.Contains(2L, free.Sequences[0].Skip(1)); // row 0 ends early with EOS 2 under this penalty
        using var forced = Run(baseline with { MinNewTokens = 10 });
        Assert.DoesNotContain(2L, forced.Sequences[0].Skip(1));

        // Any id can be made an EOS: the first generated token then ends every row, padded afterwards.
        long first = free.Sequences[0][1];
        using var stopped = Run(baseline with { EosTokenIds = [first, 2], PadTokenId = 0 });
        Assert.Equal([2L, first], stopped.Sequences[0].Take(2));
        Assert.All(stopped.Sequences[0].Skip(2), id => Assert.Equal(0L, id));
    }

    [Fact]
    public void Stop_strings_end_a_row_once_its_text_contains_them()
    {
        var options = new GenerationOptions { MaxNewTokens = 10, RepetitionPenalty = 2.0, StopStrings = ["<79>"] };
        using var pixels = _reference.Read("pixel_values");
        using var ids = _reference.Read("input_ids");
        using var mask = _reference.Read("attention_mask");
        // A toy decoder: token t reads "<t>"; row 1's third new token is 79.
        using var result = _model.Generate(pixels, ids, mask, options,
            tokens => string.Concat(tokens.Select(t => $"<{t}>")), null, default);
        output.WriteLine(string.Join(" | ", result.Sequences.Select(s => string.Join(" ", s))));
        Assert.Equal([2L, 95, 38, 79], result.Sequences[1].Take(4));
        Assert.All(result.Sequences[1].Skip(4), id => Assert.Equal(1L, id));
    }

    [Fact]
    public void Bad_options_are_refused_with_the_option_named()
    {
        Assert.Contains("NumBeams", Assert.Throws<ArgumentException>(() => Run(new GenerationOptions { NumBeams = 0 })).Message);
        Assert.Contains("TopP", Assert.Throws<ArgumentException>(() => Run(new GenerationOptions { DoSample = true, TopP = 0 })).Message);
        Assert.Contains("Temperature", Assert.Throws<ArgumentException>(() => Run(new GenerationOptions { DoSample = true, Temperature = -1 })).Message);
        Assert.Contains("Beam sampling", Assert.Throws<ArgumentException>(() => Run(new GenerationOptions { DoSample = true, NumBeams = 2 })).Message);
        Assert.Contains("MaxLength", Assert.Throws<ArgumentException>(() => Run(new GenerationOptions { MaxLength = 3 })).Message);
        Assert.Contains("StopStrings", Assert.Throws<ArgumentException>(() => Run(new GenerationOptions { StopStrings = ["x"] })).Message);
    }

    [Fact]
    public void Max_length_follows_blip2s_legacy_arithmetic()
    {
        // Legacy layout: max_length + num_query_tokens - 1 - (num_query_tokens + prompt) = 20 - 1 - 7 = 12 new tokens.
        using var result = Run(new GenerationOptions { MaxLength = 20, MinNewTokens = 20 });
        Assert.Equal(1 + 12, result.Sequences[0].Length);
    }

    [Fact]
    public void A_cancelled_generation_throws_and_leaks_nothing()
    {
        using var cts = new CancellationTokenSource();
        cts.Cancel();
        using var pixels = _reference.Read("pixel_values");
        using var ids = _reference.Read("input_ids");
        long before = DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        Assert.ThrowsAny<OperationCanceledException>(() => _model.Generate(pixels, ids, null, new GenerationOptions(), cts.Token));
        Assert.Equal(before, DisposeScopeManager.Statistics.ThreadTotalLiveCount);
    }

    [Fact]
    public void A_hundred_generations_leave_the_live_tensor_count_unchanged()
    {
        var options = new GenerationOptions { MaxNewTokens = 10, RepetitionPenalty = 2.0 };
        using (Run(options)) { }
        using (Run(options with { NumBeams = 3 })) { }
        long before = DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        for (int i = 0; i < 100; i++)
            using (Run(i % 2 == 0 ? options : options with { NumBeams = 3 })) { }
        long after = DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        output.WriteLine($"live tensors before {before}, after 100 generations {after}");
        Assert.Equal(before, after);
    }

    /// <summary>Records how many positions each forward receives.</summary>
    [Fact]
    public void Rows_that_are_separate_requests_leave_the_batch_when_they_end_and_keep_their_ids()
    {
        // Row 0 ends early with EOS under this penalty (see Min_new_tokens_forbids_eos_and_eos_ids_end_rows).
        var options = new GenerationOptions { MaxNewTokens = 10, RepetitionPenalty = 2.0 };
        using var upstream = Run(options);
        using var scope = NewDisposeScope();
        using var separate = _model.Generate(_reference.Read("pixel_values"), _reference.Read("input_ids"), _reference.Read("attention_mask"),
            GenerationCall.Resolve(options, _model.GenerationConfig) with { RowCancel = [CancellationToken.None, CancellationToken.None] });
        for (int r = 0; r < 2; r++)
        {
            output.WriteLine($"row {r}: upstream {string.Join(" ", upstream.Sequences[r])} / as separate requests {string.Join(" ", separate.Sequences[r])}");
            Assert.Equal(upstream.Sequences[r].Take(separate.Sequences[r].Length), separate.Sequences[r]);
            Assert.Equal(upstream.FinishReasons[r], separate.FinishReasons[r]);
            Assert.Equal(upstream.Scores[r], separate.Scores[r], 6);
        }
        Assert.Equal(FinishReason.EndOfSequence, separate.FinishReasons[0]);
        Assert.True(separate.Sequences[0].Length < upstream.Sequences[0].Length, "row 0 should have left the batch at its EOS, without pads");
    }

    [Fact]
    public void A_cancelled_row_leaves_the_running_batch_and_the_others_are_unchanged()
    {
        using var scope = NewDisposeScope();
        using var inference = inference_mode();
        var embeds = randn(3, 6, 32);
        var mask = ones(3, 6, ScalarType.Int64);
        GenerationRequest Request(ICausalLanguageModel model, IReadOnlyList<CancellationToken>? rows, Action<long[], bool[]>? onTokens,
            Action<int, GenerationOutput>? onRowEnded = null) => new()
        {
            Model = model, PromptEmbeds = embeds, PromptMask = mask, MaxNewTokens = 8, Eos = [-1], Pad = 1,
            Call = GenerationCall.Resolve(null, null) with { RowCancel = rows, OnTokens = onTokens, OnRowEnded = onRowEnded },
        };
        using var whole = Multimodal.Generation.Generator.Generate(Request(_model.LanguageModel, null, null));

        var counting = new CountingModel(_model.LanguageModel);
        using var cancelRow1 = new CancellationTokenSource();
        int steps = 0;
        var opened = new List<string>();
        var early = new List<(int Row, int Step, GenerationOutput Alone)>();
        using var result = Multimodal.Generation.Generator.Generate(Request(counting, [default, cancelRow1.Token, default], (ids, open) =>
        {
            opened.Add(string.Concat(open.Select(o => o ? '1' : '0')));
            if (++steps == 3) cancelRow1.Cancel();   // a client hanging up during step 3
        }, (row, alone) => early.Add((row, steps, alone))));
        output.WriteLine($"rows per forward: {string.Join(", ", counting.Rows)}; open rows per step: {string.Join(" ", opened)}");
        Assert.Equal([3L, 3, 3, 3, 2, 2, 2, 2], counting.Rows);
        Assert.Equal(FinishReason.Cancelled, result.FinishReasons[1]);
        Assert.Equal(4, result.Sequences[1].Length);   // 3 steps, then the step during which it was cancelled
        Assert.Equal(whole.Sequences[1].Take(4), result.Sequences[1]);
        foreach (int r in new[] { 0, 2 })
        {
            Assert.Equal(whole.Sequences[r], result.Sequences[r]);
            Assert.Equal(FinishReason.Length, result.FinishReasons[r]);
        }
        Assert.Equal("101", opened[^1]);
        // The cancelled row was handed out alone at the step it ended, equal to its row of the whole output.
        var (earlyRow, step, alone) = Assert.Single(early);
        Assert.Equal((1, 4), (earlyRow, step));
        Assert.Equal(result.Sequences[1], alone.Sequences[0]);
        Assert.Equal(result.Scores[1], alone.Scores[0]);
        Assert.Equal([FinishReason.Cancelled], alone.FinishReasons);
        Assert.Equal([result.NewTokens[1]], alone.NewTokens);
    }

    [Fact]
    public void A_t5_row_that_leaves_the_batch_keeps_the_other_rows_ids()
    {
        using var t5 = Blip2ForConditionalGeneration.FromPretrained(Path.Combine(FixtureCase.BuiltInRoot, "blip2-t5"));
        using var reference = FixtureCase.Get("blip2-t5").OpenReference();
        using var scope = NewDisposeScope();
        var (pixels, ids, mask) = (reference.Read("pixel_values"), reference.Read("input_ids"), reference.Read("attention_mask"));
        var options = new GenerationOptions { MaxNewTokens = 10 };
        using var whole = t5.Generate(pixels, ids, mask, options);
        using var cancelRow0 = new CancellationTokenSource();
        int steps = 0;
        var rowCancel = new[] { cancelRow0.Token }.Concat(Enumerable.Repeat(CancellationToken.None, (int)pixels.shape[0] - 1)).ToArray();
        using var separate = t5.Generate(pixels, ids, mask, GenerationCall.Resolve(options, t5.GenerationConfig) with
        {
            OnTokens = (_, _) => { if (++steps == 2) cancelRow0.Cancel(); }, RowCancel = rowCancel,
        });
        output.WriteLine($"row 0: whole {string.Join(" ", whole.Sequences[0])} / cancelled {string.Join(" ", separate.Sequences[0])}");
        Assert.Equal(FinishReason.Cancelled, separate.FinishReasons[0]);
        Assert.True(separate.Sequences[0].Length < whole.Sequences[0].Length, "row 0 should have left the batch, not run on padded");
        Assert.Equal(whole.Sequences[0].Take(separate.Sequences[0].Length), separate.Sequences[0]);
        for (int r = 1; r < whole.Sequences.Length; r++)
        {
            output.WriteLine($"row {r}: whole {string.Join(" ", whole.Sequences[r])} / with row 0 gone {string.Join(" ", separate.Sequences[r])}");
            Assert.Equal(whole.Sequences[r].Take(separate.Sequences[r].Length), separate.Sequences[r]);
            Assert.Equal(whole.NewTokens[r], separate.NewTokens[r]);
            Assert.Equal(whole.Scores[r], separate.Scores[r], 5);   // float rounding of a smaller batch (3.7e-7 seen)
        }
    }

    private sealed class CountingModel(ICausalLanguageModel inner) : ICausalLanguageModel
    {
        public List<long> Lengths { get; } = [];
        public List<long> Rows { get; } = [];
        public Tensor EmbedTokens(Tensor inputIds) => inner.EmbedTokens(inputIds);
        public KvCache NewCache() => inner.NewCache();
        public bool SelectRows(Tensor rows) => inner.SelectRows(rows);

        public Tensor Forward(Tensor inputsEmbeds, Tensor attentionMask, KvCache? cache, Tensor? inputIds = null)
        {
            Lengths.Add(inputsEmbeds.shape[1]);
            Rows.Add(inputsEmbeds.shape[0]);
            return inner.Forward(inputsEmbeds, attentionMask, cache);
        }
    }
}
