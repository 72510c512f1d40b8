using Multimodal.Blip2;
using Multimodal.Common;
using Multimodal.Generation;
using Multimodal.Processing;
using Multimodal.Tests.TestSupport;
using TorchSharp;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace Multimodal.Tests.Modules;

/// <summary>The float32 kernel that batched decode steps (5–8 rows) use on AVX-512 CPUs: every output is the exact
/// dot product plus bias to within float32 accumulation; it takes only the products it is meant for; and a batch
/// decodes the same ids with it as with libtorch.</summary>
public sealed class Float32FewRowsTests(ITestOutputHelper output)
{
    [SkippableTheory]
    [InlineData(5, 1, 1, true)]
    [InlineData(8, 4, 15, false)]
    [InlineData(6, 7, 16, true)]
    [InlineData(7, 100, 33, true)]
    [InlineData(8, 1027, 1024, true)]
    [InlineData(5, 64, 4099, false)]
    public void Each_output_is_the_dot_product_plus_the_bias_to_float32_accumulation(int m, int n, int k, bool withBias)
    {
        SkipUnlessAvailable();
        CheckKernel(m, n, k, withBias, (x, weight, bias) =>
        {
            Assert.True(Float32FewRows.Applies(x, weight, bias));
            return Float32FewRows.Linear(x, weight, bias);
        });
    }

    // The single-row kernel (a float32 model's decode step) under the same two checks.
    [SkippableTheory]
    [InlineData(1, 1, true)]
    [InlineData(5, 15, false)]
    [InlineData(7, 16, true)]
    [InlineData(1027, 1024, true)]
    [InlineData(9, 1090, true)]        // one row at a time: 64-input steps, a scalar tail
    [InlineData(6, 4096, false)]       // the widest input read one row at a time
    [InlineData(64, 4099, false)]      // four rows at a time
    public void A_single_row_is_the_dot_product_plus_the_bias_to_float32_accumulation(int n, int k, bool withBias)
    {
        Skip.IfNot(Float32SingleRow.Available, "this machine cannot run the single-row kernel, or it is switched off");
        CheckKernel(1, n, k, withBias, (x, weight, bias) =>
        {
            Assert.True(Float32SingleRow.TryLinear(x, weight, bias, out var product));
            return product;
        });
    }

    private void CheckKernel(int m, int n, int k, bool withBias, Func<Tensor, Tensor, Tensor?, Tensor> kernel)
    {
        using var scope = NewDisposeScope();
        var generator = new TorchSharp.torch.Generator((ulong)(m * 131 + n * 7919 + k));
        var weight = randn(n, k, generator: generator).mul(0.05);
        var x = randn(m, 1, k, generator: generator);
        var bias = withBias ? randn(n, generator: generator) : null;
        Tensor ours;
        using (inference_mode()) ours = kernel(x, weight, bias);
        Assert.Equal(new long[] { m, 1, n }, ours.shape);

        // float64 is exact enough for the reference; float32 sums may differ from it by (K + 2)·2⁻²⁴·(Σ|wᵢxᵢ| + |b|).
        var w64 = weight.to(ScalarType.Float64); var x64 = x.reshape(m, k).to(ScalarType.Float64);
        var exact = x64.matmul(w64.t()); var magnitude = x64.abs().matmul(w64.abs().t());
        if (bias is not null) { exact += bias.to(ScalarType.Float64); magnitude += bias.to(ScalarType.Float64).abs(); }
        var bound = magnitude * ((k + 2) * Math.Pow(2, -24));
        var error = (ours.reshape(m, n).to(ScalarType.Float64) - exact).abs();
        double excess = (error - bound).max().item<double>();
        output.WriteLine($"M={m} N={n} K={k} bias={withBias}: max abs error {error.max().item<double>():E2}, largest error minus its bound {excess:E2}");
        Assert.True(excess <= 0, $"an output exceeds its bound by {excess:E2}");

        // The worst-case bound above is loose (errors of random sums grow as √K, not K): the tight check is against
        // libtorch's own float32 linear on the same operands, whose error ours may exceed by little.
        var libtorch = nn.functional.linear(x, weight, bias).reshape(m, n).to(ScalarType.Float64);
        double theirs = (libtorch - exact).abs().max().item<double>(), ours64 = error.max().item<double>();
        double slack = Math.Pow(2, -24) * exact.abs().max().item<double>();
        output.WriteLine($"  libtorch's max abs error {theirs:E2}, ours {ours64:E2}");
        Assert.True(ours64 <= 4 * theirs + slack, $"our error {ours64:E2} is more than 4x libtorch's {theirs:E2}");
    }

    [SkippableFact]
    public void It_takes_only_five_to_eight_float32_rows_on_the_cpu_without_autograd()
    {
        using var scope = NewDisposeScope();
        var weight = zeros(8, 64);
        using (inference_mode())
        {
            Assert.False(Float32FewRows.Applies(zeros(4, 64), weight, null));                   // libtorch is as fast
            Assert.False(Float32FewRows.Applies(zeros(9, 64), weight, null));                   // GEMM territory
            Assert.False(Float32FewRows.Applies(zeros(6, 64, ScalarType.BFloat16), weight, null));
            Assert.False(Float32FewRows.Applies(zeros(6, 64), zeros(64, 8).t(), null));         // strided weight
            Assert.False(Float32FewRows.Applies(zeros(64, 6).t(), weight, null));               // strided input
            Assert.False(Float32FewRows.Applies(zeros(6, 32), weight, null));                   // wrong width: libtorch names it
            Assert.False(Float32FewRows.Applies(zeros(6, 64), weight, zeros(7)));               // bias too short
        }
        Assert.False(Float32FewRows.Applies(zeros(6, 64), weight, null));                       // autograd on
        SkipUnlessAvailable();
        using (inference_mode())
        {
            Assert.True(Float32FewRows.Applies(zeros(5, 64), weight, zeros(8)));
            Assert.True(Float32FewRows.Applies(zeros(8, 1, 64), weight, null));
        }
        var before = CpuKernelOptions.Current;
        try
        {
            CpuKernelOptions.Current = before with { Float32FewRows = false };
            using (inference_mode()) Assert.False(Float32FewRows.Applies(zeros(5, 64), weight, zeros(8)));   // its switch
        }
        finally
        {
            CpuKernelOptions.Current = before;
        }
    }

    [SkippableFact]
    public void A_batch_of_the_trained_model_decodes_the_same_ids_with_and_without_the_kernel()
    {
        SkipUnlessAvailable();
        using var captioner = Blip2Captioner.FromPretrained(Repo.ShapesModel);
        var scenes = Directory.GetFiles(Path.Combine(Repo.Root, "samples", "images"), "scene*.png").Order().ToList();
        var images = Enumerable.Range(0, 6).Select(i => ImageDecoder.Decode(scenes[i % scenes.Count])).ToList();
        var prompts = Enumerable.Range(0, 6).Select(i => i % 2 == 0 ? "" : "a big").ToList();   // left padding in the batch
        using var inputs = captioner.Processor.Process(images, prompts);
        var options = new GenerationOptions { MaxNewTokens = 20 };
        long[][] Ids()
        {
            using var result = captioner.Model.Generate(inputs.PixelValues, inputs.InputIds, inputs.AttentionMask, options);
            return result.Sequences;
        }
        long calls = Float32FewRows.Calls;
        var withKernel = Ids();
        long used = Float32FewRows.Calls - calls;
        long[][] withLibtorch;
        using (LinearExtensions.LibtorchOnlyOnThisThread()) withLibtorch = Ids();
        output.WriteLine($"the kernel computed {used} products of the batched decode");
        Assert.True(used > 0, "the batch never reached the kernel: this compared libtorch with itself");
        for (int i = 0; i < images.Count; i++)
        {
            output.WriteLine($"row {i}: \"{captioner.Processor.Tokenizer.Decode(withKernel[i])}\"");
            Assert.Equal(withLibtorch[i], withKernel[i]);
        }
    }

    [SkippableFact]
    public void One_image_decodes_the_same_ids_with_and_without_the_single_row_kernel()
    {
        Skip.IfNot(Float32SingleRow.Available, "this machine cannot run the single-row kernel, or it is switched off");
        KernelChecks.SameIdsWithAndWithout(output, "products", () => Float32SingleRow.Calls, LinearExtensions.LibtorchOnlyOnThisThread);
    }

    private static void SkipUnlessAvailable() => KernelChecks.SkipUnless(Float32FewRows.Available);
}
