using Multimodal.Common;
using Multimodal.Generation;
using Multimodal.Tests.TestSupport;
using TorchSharp;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace Multimodal.Tests.Modules;

/// <summary>The one-query attention kernel a float32 decode step uses: against float64 and libtorch's own attention on
/// every layout the models hand it (the cache's strided views, split heads, broadcast masks), only for the calls it is
/// meant for, and a caption decoded with it equals the one decoded by libtorch.</summary>
public sealed class DecodeAttentionTests(ITestOutputHelper output)
{
    public enum Layout { Contiguous, CacheView, SplitHeads }
    public enum MaskKind { None, Padding, PerHead, Expanded }

    [SkippableTheory]
    [InlineData(1, 16, 1, 64, Layout.CacheView, MaskKind.Padding)]
    [InlineData(1, 16, 50, 64, Layout.CacheView, MaskKind.Padding)]
    [InlineData(3, 4, 70, 80, Layout.CacheView, MaskKind.Padding)]     // OPT-2.7b's heads; a capacity of 128
    [InlineData(2, 3, 17, 7, Layout.SplitHeads, MaskKind.PerHead)]     // a scalar tail; T5's per-head bias
    [InlineData(2, 5, 33, 128, Layout.Contiguous, MaskKind.Expanded)]
    [InlineData(1, 2, 300, 256, Layout.SplitHeads, MaskKind.None)]
    [InlineData(4, 1, 8192, 16, Layout.Contiguous, MaskKind.Padding)]  // the most keys it takes
    public void One_query_is_the_softmax_average_of_the_values_to_float32_accumulation(int b, int h, int t, int d, Layout layout, MaskKind maskKind)
    {
        SkipUnlessAvailable();
        using var scope = NewDisposeScope();
        using var grad = no_grad();
        var generator = new TorchSharp.torch.Generator((ulong)(b * 7919 + h * 131 + t * 17 + d));
        var q = randn(b, 1, h * d, generator: generator).view(b, 1, h, d).transpose(1, 2);   // as SplitHeads hands it over
        var (k, v) = layout switch
        {
            Layout.CacheView => (randn(b, h, t + 61, d, generator: generator).narrow(2, 0, t), randn(b, h, t + 61, d, generator: generator).narrow(2, 0, t)),
            Layout.SplitHeads => (randn(b, t, h * d, generator: generator).view(b, t, h, d).transpose(1, 2), randn(b, t, h * d, generator: generator).view(b, t, h, d).transpose(1, 2)),
            _ => (randn(b, h, t, d, generator: generator), randn(b, h, t, d, generator: generator)),
        };
        Tensor? mask = maskKind switch
        {
            MaskKind.Padding => Attention.PaddingMask(rand(b, t, generator: generator).gt(0.3).to(ScalarType.Int64), ScalarType.Float32),
            MaskKind.PerHead => randn(1, h, 1, t, generator: generator),
            MaskKind.Expanded => randn(1, 1, 1, t, generator: generator).expand(b, h, 1, t),
            _ => null,
        };
        Assert.True(layout == Layout.Contiguous || !k.is_contiguous());

        long calls = DecodeAttention.Calls;
        var ours = Attention.ScaledDotProduct(q, k, v, mask);
        Assert.Equal(calls + 1, DecodeAttention.Calls);
        Assert.Equal(new long[] { b, h, 1, d }, ours.shape);
        Tensor libtorch;
        using (CpuKernelOptions.InThisFlow(CpuKernelOptions.Current with { DecodeAttention = false }))
            libtorch = Attention.ScaledDotProduct(q, k, v, mask);
        Assert.Equal(calls + 1, DecodeAttention.Calls);

        var (q64, k64, v64) = (q.to(ScalarType.Float64), k.to(ScalarType.Float64), v.to(ScalarType.Float64));
        var scores = q64.matmul(k64.transpose(2, 3)).div(Math.Sqrt(d));
        if (mask is not null) scores = scores.add(mask.to(ScalarType.Float64));
        var exact = scores.softmax(-1).matmul(v64);
        double oursError = (ours.to(ScalarType.Float64) - exact).abs().max().item<double>();
        double theirs = (libtorch.to(ScalarType.Float64) - exact).abs().max().item<double>();
        double slack = Math.Pow(2, -24) * v64.abs().max().item<double>();
        output.WriteLine($"B={b} H={h} T={t} d={d} {layout} {maskKind}: max abs error {oursError:E2} (libtorch {theirs:E2})");
        Assert.True(oursError <= 4 * theirs + 4 * slack, $"our error {oursError:E2} is more than 4x libtorch's {theirs:E2}");
        Assert.True(oursError <= 1e-5, $"max abs error {oursError:E2} against float64");
    }

    [SkippableTheory]
    [InlineData(1, 16, 64, 56)]
    [InlineData(3, 4, 80, 130)]
    public void Rows_over_a_cache_storage_equal_the_attention_over_its_views(int b, int h, int d, int t)
    {
        SkipUnlessAvailable();
        using var scope = NewDisposeScope();
        using var grad = no_grad();
        var generator = new TorchSharp.torch.Generator((ulong)(b * 31 + t));
        var keys = randn(b, h, 192, d, generator: generator);
        var values = randn(b, h, 192, d, generator: generator);
        var q = randn(b, 1, h * d, generator: generator);
        var mask = Attention.PaddingMask(rand(b, t, generator: generator).gt(0.2).to(ScalarType.Int64), ScalarType.Float32);
        Assert.True(DecodeAttention.TryComputeRows(q, h, keys, values, t, mask, out var rows));
        Assert.True(DecodeAttention.TryCompute(q.view(b, 1, h, d).transpose(1, 2), keys.narrow(2, 0, t), values.narrow(2, 0, t), mask, out var viewed));
        Assert.Equal(new long[] { b, 1, h * d }, rows.shape);
        Assert.True(rows.eq(Attention.MergeHeads(viewed)).all().item<bool>(), "the two entries computed different attentions");
        Assert.False(DecodeAttention.TryComputeRows(q, h, keys, values, 193, null, out _), "more positions than the storage holds");
        Assert.False(DecodeAttention.TryComputeRows(q, h + 1, keys, values, t, null, out _), "heads that do not split the row");
        Assert.False(DecodeAttention.TryComputeRows(q, h, keys.narrow(2, 0, 100), values.narrow(2, 0, 100), t, null, out _), "a strided storage");
    }

    // Upstream's finfo.min masks give a query whose keys are all padding the uniform average of the values.
    [SkippableFact]
    public void A_query_whose_keys_are_all_padding_averages_every_value()
    {
        SkipUnlessAvailable();
        using var scope = NewDisposeScope();
        using var grad = no_grad();
        var q = randn(1, 2, 1, 16);
        var k = randn(1, 2, 9, 16);
        var v = randn(1, 2, 9, 16);
        var mask = Attention.PaddingMask(zeros(1, 9, ScalarType.Int64), ScalarType.Float32);
        Assert.True(DecodeAttention.TryCompute(q, k, v, mask, out var ours));
        var expected = v.mean([2], keepdim: true);
        double error = (ours - expected).abs().max().item<float>();
        output.WriteLine($"max abs error against the mean of the values {error:E2}");
        Assert.True(error <= 1e-6);
    }

    [SkippableFact]
    public void It_takes_only_one_float32_query_on_the_cpu_with_autograd_off()
    {
        SkipUnlessAvailable();
        using var scope = NewDisposeScope();
        var q = randn(1, 2, 1, 8); var k = randn(1, 2, 5, 8); var mask = zeros(1, 1, 1, 5);
        using (no_grad())
        {
            Assert.True(DecodeAttention.TryCompute(q, k, k, mask, out _));
            Assert.False(DecodeAttention.TryCompute(randn(1, 2, 2, 8), k, k, null, out _), "two queries");
            Assert.False(DecodeAttention.TryCompute(q.to(ScalarType.BFloat16), k.to(ScalarType.BFloat16), k.to(ScalarType.BFloat16), null, out _), "bfloat16");
            Assert.False(DecodeAttention.TryCompute(q, k, randn(1, 2, 5, 4), null, out _), "values of another width");
            Assert.False(DecodeAttention.TryCompute(q, k, k, zeros(1, 1, 1, 4), out _), "a mask over other keys");
            Assert.False(DecodeAttention.TryCompute(q, k, k, zeros(1, 3, 1, 5), out _), "a mask over other heads");
            Assert.False(DecodeAttention.TryCompute(q, k, k, zeros(1, 1, 1, 5, ScalarType.Float64), out _), "a float64 mask");
            Assert.False(DecodeAttention.TryCompute(q, k.transpose(2, 3).contiguous().transpose(2, 3), k, null, out _), "keys strided along d");
            var many = zeros(1, 1, DecodeAttention.MaxKeys + 1, 8);
            Assert.False(DecodeAttention.TryCompute(randn(1, 1, 1, 8), many, many, null, out _), "more keys than its stack holds");
            var wide = zeros(1, 1, 3, DecodeAttention.MaxHeadDim + 1);
            Assert.False(DecodeAttention.TryCompute(zeros(1, 1, 1, DecodeAttention.MaxHeadDim + 1), wide, wide, null, out _), "a head wider than it holds");
            using (CpuKernelOptions.InThisFlow(CpuKernelOptions.Current with { DecodeAttention = false }))
                Assert.False(DecodeAttention.TryCompute(q, k, k, mask, out _), "switched off");
        }
        Assert.False(DecodeAttention.TryCompute(q.requires_grad_(), k, k, mask, out _), "autograd on");
    }

    [SkippableFact]
    public void One_image_decodes_the_same_ids_with_and_without_the_attention_kernel()
    {
        SkipUnlessAvailable();
        KernelChecks.SameIdsWithAndWithout(output, "attentions", () => DecodeAttention.Calls,
            () => CpuKernelOptions.InThisFlow(CpuKernelOptions.Current with { DecodeAttention = false }));
    }

    private static void SkipUnlessAvailable() => KernelChecks.SkipUnless(DecodeAttention.Available);
}
