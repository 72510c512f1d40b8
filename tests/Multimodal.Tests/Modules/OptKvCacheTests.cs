using Multimodal.Blip2;
using Multimodal.Tests.Parity;
using Multimodal.Tests.TestSupport;
using TorchSharp;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace Multimodal.Tests.Modules;

/// <summary>The OPT decoder with an explicit KV cache: incremental decoding equals a full pass, and
/// repeated forwards leave no live tensors behind.</summary>
public sealed class OptKvCacheTests(ITestOutputHelper output)
{
    private static string Fixture => Path.Combine(FixtureCase.BuiltInRoot, "blip2-opt");

    [Fact]
    public void Prefill_then_one_token_at_a_time_equals_the_full_pass()
    {
        using var model = Blip2ForConditionalGeneration.FromPretrained(Fixture);
        using var reference = FixtureCase.Get("blip2-opt").OpenReference();
        using var full = Blip2ParityTests.RunForward(model, reference);
        using var inference = inference_mode();
        using var scope = NewDisposeScope();
        var embeds = full.LmInputsEmbeds;
        var mask = full.LmAttentionMask;
        long total = embeds.shape[1], prefill = total - 4;
        using var cache = model.LanguageModel.NewCache();
        var pieces = new List<Tensor> { model.LanguageModel.Forward(embeds.narrow(1, 0, prefill), mask.narrow(1, 0, prefill), cache) };
        for (long t = prefill; t < total; t++)
            pieces.Add(model.LanguageModel.Forward(embeds.narrow(1, t, 1), mask.narrow(1, 0, t + 1), cache));
        Assert.Equal(total, cache.SequenceLength);
        TensorAssert.Close(full.Logits, cat(pieces, 1), "incremental logits", output, tolerance: 1e-5);
    }

    // Every layer of every one-token step runs in our own code (norms, adds, ReLU, the cache written as rows, the attention
    // over its storage): the attention kernel's counter says so, and the logits equal libtorch's path.
    [SkippableFact]
    public void Decode_steps_in_our_own_code_run_in_every_layer_and_equal_libtorchs()
    {
        KernelChecks.SkipUnless(Multimodal.Common.DecodeAttention.Available);
        using var model = Blip2ForConditionalGeneration.FromPretrained(Fixture);
        using var reference = FixtureCase.Get("blip2-opt").OpenReference();
        using var full = Blip2ParityTests.RunForward(model, reference);
        using var inference = inference_mode();
        using var scope = NewDisposeScope();
        var (embeds, mask) = (full.LmInputsEmbeds, full.LmAttentionMask);
        long total = embeds.shape[1], prefill = total - 6;
        Tensor Decode()
        {
            using var cache = model.LanguageModel.NewCache();
            var pieces = new List<Tensor> { model.LanguageModel.Forward(embeds.narrow(1, 0, prefill), mask.narrow(1, 0, prefill), cache) };
            for (long t = prefill; t < total; t++)
                pieces.Add(model.LanguageModel.Forward(embeds.narrow(1, t, 1), mask.narrow(1, 0, t + 1), cache));
            return cat(pieces, 1);
        }
        long calls = Multimodal.Common.DecodeAttention.Calls;
        var ours = Decode();
        long used = Multimodal.Common.DecodeAttention.Calls - calls;
        Tensor theirs;
        using (Multimodal.Common.CpuKernelOptions.InThisFlow(Multimodal.Common.CpuKernelOptions.Current with { DecodeAttention = false }))
            theirs = Decode();
        output.WriteLine($"{used} layer steps in our own code");
        Assert.Equal(2 * 6, used);                     // 2 layers × 6 one-token steps
        TensorAssert.Close(theirs, ours, "decode-step logits against libtorch's path", output, tolerance: 1e-5);
        TensorAssert.Close(full.Logits, ours, "incremental logits against the full pass", output, tolerance: 1e-5);
    }

    [Fact]
    public void A_hundred_forwards_leave_the_live_tensor_count_unchanged()
    {
        using var model = Blip2ForConditionalGeneration.FromPretrained(Fixture);
        using var reference = FixtureCase.Get("blip2-opt").OpenReference();
        using (Blip2ParityTests.RunForward(model, reference)) { }
        long before = DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        for (int i = 0; i < 100; i++)
            using (Blip2ParityTests.RunForward(model, reference)) { }
        long after = DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        output.WriteLine($"live tensors before {before}, after 100 forwards {after}");
        Assert.Equal(before, after);
    }
}
