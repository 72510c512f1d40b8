using Multimodal.Blip2;
using Multimodal.Common;
using Multimodal.Generation;
using Multimodal.Processing;
using Multimodal.Tests.TestSupport;
using TorchSharp;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace Multimodal.Tests.Modules;

/// <summary>The bf16 matrix–vector kernel that decode steps use on AVX-512 CPUs: every output is the exact dot
/// product of the bf16 values to within float32 accumulation, rounded to bf16 and, with a bias, rounded again after
/// adding it (libtorch's order); it takes only the products
/// it is meant for; and models decode the same ids with it as with libtorch.</summary>
public sealed class Bf16MatrixVectorTests(ITestOutputHelper output)
{
    [SkippableTheory]
    [InlineData(1, 1, false)]
    [InlineData(5, 31, true)]
    [InlineData(4, 32, false)]
    [InlineData(37, 33, true)]
    [InlineData(1027, 1024, true)]
    [InlineData(64, 1040, false)]
    [InlineData(9, 1090, true)]        // one row at a time: 64-input steps, a 32-input step, a scalar tail
    [InlineData(6, 4096, false)]       // the widest input read one row at a time
    [InlineData(3, 4099, true)]        // four rows at a time
    public void Each_output_is_the_dot_product_rounded_to_bf16_then_plus_the_bias_rounded_again(int n, int k, bool withBias)
    {
        SkipUnlessAvailable();
        using var scope = NewDisposeScope();
        var generator = new TorchSharp.torch.Generator((ulong)(n * 7919 + k));
        var weight = randn(n, k, generator: generator).mul(0.05).to(ScalarType.BFloat16);
        var x = randn(1, 1, k, generator: generator).to(ScalarType.BFloat16);
        var bias = withBias ? randn(n, generator: generator).to(ScalarType.BFloat16) : null;
        Tensor ours;
        using (inference_mode()) ours = Bf16MatrixVector.Linear(x, weight, bias);
        Assert.Equal(new long[] { 1, 1, n }, ours.shape);
        Assert.Equal(ScalarType.BFloat16, ours.dtype);

        // Exact in float64 (bf16 products and sums of ≤ 4099 of them are exact enough there); the kernel's float32
        // sums may differ from it by (K + 1)·2⁻²⁴·Σ|wᵢxᵢ|, and each rounding to bf16 adds half a bf16 ulp of its value.
        var w64 = weight.to(ScalarType.Float64); var x64 = x.reshape(k).to(ScalarType.Float64);
        var product = w64.mv(x64);
        var accumulation = w64.abs().mv(x64.abs()) * ((k + 1) * Math.Pow(2, -24));
        var halfUlp = HalfUlp(product.abs() + accumulation);
        var exact = product;
        if (bias is not null)
        {
            exact = product + bias.to(ScalarType.Float64);
            halfUlp += HalfUlp(exact.abs() + accumulation + halfUlp);
        }
        var error = (ours.reshape(n).to(ScalarType.Float64) - exact).abs();
        var excess = (error - accumulation - halfUlp).max().item<double>();
        output.WriteLine($"N={n} K={k} bias={withBias}: max error {error.max().item<double>():E2}, largest error minus its bound {excess:E2}");
        Assert.True(excess <= 0, $"an output exceeds its bound by {excess:E2}");

        // libtorch's own bf16 linear satisfies the same bound, so the two differ by at most twice it.
        var libtorch = nn.functional.linear(x, weight, bias).reshape(n).to(ScalarType.Float64);
        var apart = ((libtorch - ours.reshape(n).to(ScalarType.Float64)).abs() - 2 * halfUlp - 2 * accumulation).max().item<double>();
        output.WriteLine($"  outputs that differ from libtorch's: {(libtorch != ours.reshape(n).to(ScalarType.Float64)).sum().item<long>()} of {n}");
        Assert.True(apart <= 0, $"an output is further from libtorch's than both bounds allow ({apart:E2})");
    }

    [SkippableFact]
    public void Nan_and_infinity_propagate_and_rounding_is_to_nearest_even()
    {
        Assert.Equal(0x3F80, Bf16MatrixVector.ToBf16(1f));
        Assert.Equal(0x3F80, Bf16MatrixVector.ToBf16(BitConverter.UInt32BitsToSingle(0x3F808000)));   // tie, even stays
        Assert.Equal(0x3F82, Bf16MatrixVector.ToBf16(BitConverter.UInt32BitsToSingle(0x3F818000)));   // tie, odd rounds up
        Assert.Equal(0x3F81, Bf16MatrixVector.ToBf16(BitConverter.UInt32BitsToSingle(0x3F808001)));
        Assert.Equal(0x7F80, Bf16MatrixVector.ToBf16(float.PositiveInfinity));
        Assert.Equal(0x7F80, Bf16MatrixVector.ToBf16(float.MaxValue));                                 // rounds past the largest bf16
        Assert.True(float.IsNaN(BitConverter.Int32BitsToSingle(Bf16MatrixVector.ToBf16(float.NaN) << 16)));
        SkipUnlessAvailable();
        using var scope = NewDisposeScope();
        var weight = ones(3, 64, ScalarType.BFloat16);
        var x = ones(64, ScalarType.BFloat16);
        x[5] = tensor(float.NaN).to(ScalarType.BFloat16);
        using (inference_mode()) Assert.True(Bf16MatrixVector.Linear(x, weight, null).isnan().all().item<bool>());
        x[5] = tensor(float.PositiveInfinity).to(ScalarType.BFloat16);
        using (inference_mode()) Assert.True(Bf16MatrixVector.Linear(x, weight, null).isposinf().all().item<bool>());
    }

    [SkippableFact]
    public void Views_into_larger_tensors_read_from_their_own_offset()
    {
        SkipUnlessAvailable();
        using var scope = NewDisposeScope();
        var generator = new TorchSharp.torch.Generator(5);
        var weights = randn(300, 96, generator: generator).to(ScalarType.BFloat16);
        var rows = randn(3, 5, 96, generator: generator).to(ScalarType.BFloat16);
        var biases = randn(400, generator: generator).to(ScalarType.BFloat16);
        var (weight, x, bias) = (weights.narrow(0, 100, 150), rows[1].narrow(0, 3, 1), biases.narrow(0, 200, 150));   // contiguous, offset
        using var inference = inference_mode();
        Assert.True(Bf16MatrixVector.Applies(x, weight, bias));
        var ours = Bf16MatrixVector.Linear(x, weight, bias);
        var copies = Bf16MatrixVector.Linear(x.clone(), weight.clone(), bias.clone());
        Assert.True(ours.eq(copies).all().item<bool>(), "a view gave other outputs than its copy");
    }

    [SkippableFact]
    public void Concurrent_callers_get_the_same_outputs_as_one_caller()
    {
        SkipUnlessAvailable();
        using var scope = NewDisposeScope();
        var generator = new TorchSharp.torch.Generator(11);
        var weight = randn(2051, 1536, generator: generator).to(ScalarType.BFloat16);
        var bias = randn(2051, generator: generator).to(ScalarType.BFloat16);
        var inputs = Enumerable.Range(0, 4).Select(_ => randn(1, 1536, generator: generator).to(ScalarType.BFloat16)).ToArray();
        Tensor[] expected;
        using (inference_mode()) expected = inputs.Select(x => Bf16MatrixVector.Linear(x, weight, bias)).ToArray();
        // Each thread is the master of its own OpenMP team while the others run theirs; collections run throughout
        // (the team's threads run managed code, so each collection waits for them at its safe points).
        int mismatches = 0, collections = 0;
        bool done = false;
        var collector = new Thread(() =>
        {
            while (!Volatile.Read(ref done)) { GC.Collect(); GC.WaitForPendingFinalizers(); collections++; }
        });
        collector.Start();
        Parallel.For(0, 4, new ParallelOptions { MaxDegreeOfParallelism = 4 }, i =>
        {
            using var inner = NewDisposeScope();
            using var inference = inference_mode();
            for (int round = 0; round < 200; round++)
                if (!Bf16MatrixVector.Linear(inputs[i], weight, bias).eq(expected[i]).all().item<bool>()) Interlocked.Increment(ref mismatches);
        });
        Volatile.Write(ref done, true);
        collector.Join();
        output.WriteLine($"800 products on 4 threads, {collections} collections meanwhile, {mismatches} mismatches");
        Assert.Equal(0, mismatches);
    }

    [SkippableFact]
    public void It_takes_only_single_bf16_rows_on_the_cpu_without_autograd()
    {
        using var scope = NewDisposeScope();
        var weight = zeros(8, 64, ScalarType.BFloat16);
        using (inference_mode())
        {
            Assert.False(Bf16MatrixVector.Applies(zeros(2, 64, ScalarType.BFloat16), weight, null));           // two rows: libtorch's GEMM
            Assert.False(Bf16MatrixVector.Applies(zeros(1, 64), weight, null));                                 // float32 input
            Assert.False(Bf16MatrixVector.Applies(zeros(1, 64, ScalarType.BFloat16), zeros(8, 64), null));      // float32 weight
            Assert.False(Bf16MatrixVector.Applies(zeros(1, 64, ScalarType.BFloat16), zeros(64, 8, ScalarType.BFloat16).t(), null));   // strided
            Assert.False(Bf16MatrixVector.Applies(zeros(1, 32, ScalarType.BFloat16), weight, null));           // wrong width: libtorch names it
            Assert.False(Bf16MatrixVector.Applies(zeros(1, 64, ScalarType.BFloat16), weight, zeros(7, ScalarType.BFloat16)));    // bias too short
            Assert.False(Bf16MatrixVector.Applies(zeros(1, 64, ScalarType.BFloat16), weight, zeros(8)));                          // float32 bias
        }
        Assert.False(Bf16MatrixVector.Applies(zeros(1, 64, ScalarType.BFloat16), weight, null));               // autograd on
        SkipUnlessAvailable();
        using (inference_mode())
            Assert.True(Bf16MatrixVector.Applies(zeros(1, 1, 64, ScalarType.BFloat16), weight, zeros(8, ScalarType.BFloat16)));
    }

    // Losing the libgomp lookup (a TorchSharp upgrade, another OpenMP runtime) would silently send every product to
    // libtorch; on a machine with the instructions, that fails here.
    [SkippableFact]
    public void The_kernels_run_wherever_the_cpu_has_the_instructions()
    {
        Skip.IfNot(OperatingSystem.IsLinux() && System.Runtime.Intrinsics.X86.Avx512F.IsSupported, "no AVX-512 on this machine (or not Linux)");
        Skip.If(Environment.GetEnvironmentVariable(CpuKernelOptions.Variable) == "0", $"{CpuKernelOptions.Variable}=0 turns the kernels off");
        output.WriteLine($"libgomp: {OpenMpTeam.LibraryPath ?? "(none)"}");
        Assert.True(OpenMpTeam.Available, "libtorch's libgomp was not found: the kernels cannot run on its OpenMP team");
        Assert.True(CpuKernelOptions.Supported);
        Assert.True(Bf16MatrixVector.Available && Float32FewRows.Available && QuantizedMatrixRows.Available && DecodeAttention.Available, "a kernel is off although this machine supports it");
    }

    [SkippableFact]
    public void The_quantized_kernel_runs_in_avx2_wherever_the_cpu_has_it()
    {
        Skip.IfNot(OperatingSystem.IsLinux() && System.Runtime.Intrinsics.X86.Avx2.IsSupported && System.Runtime.Intrinsics.X86.Fma.IsSupported,
            "no AVX2 and FMA on this machine (or not Linux)");
        Skip.If(Environment.GetEnvironmentVariable(CpuKernelOptions.Variable) == "0", $"{CpuKernelOptions.Variable}=0 turns the kernels off");
        Assert.True(CpuKernelOptions.SupportedAvx2);
        Assert.True(QuantizedMatrixRows.Available, "the quantized kernel is off although this machine supports its AVX2 form");
    }

    [SkippableFact]
    public void The_trained_model_decodes_the_same_ids_in_bf16_with_and_without_the_kernel_and_as_in_float32()
    {
        SkipUnlessAvailable();
        using var bf16 = Blip2Captioner.FromPretrained(Repo.ShapesModel, dtype: ScalarType.BFloat16);
        using var fp32 = Blip2Captioner.FromPretrained(Repo.ShapesModel);
        var scenes = Directory.GetFiles(Path.Combine(Repo.Root, "samples", "images"), "scene*.png").Order().ToList();
        Assert.NotEmpty(scenes);
        using var inputs = bf16.Processor.Process(scenes.Select(s => ImageDecoder.Decode(s)).ToList(), scenes.Select(_ => "").ToList());
        var options = new GenerationOptions { MaxNewTokens = 20 };
        // One image at a time, on this thread (the kernel takes single rows; the switch is per thread).
        long[] Ids(Blip2Captioner captioner, int i)
        {
            using var output = captioner.Model.Generate(inputs.PixelValues.narrow(0, i, 1), inputs.InputIds.narrow(0, i, 1),
                inputs.AttentionMask.narrow(0, i, 1), options);
            return output.Sequences[0];
        }
        for (int i = 0; i < scenes.Count; i++)
        {
            long calls = Bf16MatrixVector.Calls;
            var withKernel = Ids(bf16, i);
            Assert.True(Bf16MatrixVector.Calls > calls, "the bf16 decode never reached the kernel: this compared libtorch with itself");
            calls = Bf16MatrixVector.Calls;
            long[] withLibtorch;
            using (LinearExtensions.LibtorchOnlyOnThisThread()) withLibtorch = Ids(bf16, i);
            Assert.Equal(calls, Bf16MatrixVector.Calls);
            var float32 = Ids(fp32, i);
            output.WriteLine($"{Path.GetFileName(scenes[i])}: \"{bf16.Processor.Tokenizer.Decode(withKernel)}\" ({withKernel.Length} ids)");
            Assert.Equal(withLibtorch, withKernel);
            Assert.Equal(float32, withKernel);
        }
    }

    // Half a bf16 ulp (8 significant bits) of a value of this magnitude.
    private static Tensor HalfUlp(Tensor magnitude) => magnitude.clamp_min(1e-30).log2().floor().sub(8).exp2();

    private static void SkipUnlessAvailable() => KernelChecks.SkipUnless(Bf16MatrixVector.Available);
}
