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
