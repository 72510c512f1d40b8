using Multimodal.Blip2;
using Multimodal.Common;
using Multimodal.Generation;
using Multimodal.Processing;
using Multimodal.Tests.TestSupport;
using Multimodal.Train;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace Multimodal.Tests.Modules;

/// <summary>Weight-only quantization (8 bits per channel, 4 bits per group of 32): the stored integers stay within half a
/// step of the float weights; the kernel's products equal the dequantized weights' to float32 accumulation, and libtorch's
/// on the same weights, or with 8-bit inputs the dequantized weights times the dequantized inputs, within the inputs' half
/// steps of the float inputs' product; layers keep their names; the trained model captions unseen scenes as in float32.</summary>
public sealed class QuantizedLinearTests(ITestOutputHelper output)
{
    private static TorchSharp.Modules.Linear Layer(long n, long k, bool bias, ulong seed)
    {
        var generator = new TorchSharp.torch.Generator(seed);
        var layer = nn.Linear(k, n, hasBias: bias);
        using (no_grad())
        {
            layer.weight!.copy_(randn(n, k, generator: generator).mul_(0.05));
            if (bias) layer.bias!.copy_(randn(n, generator: generator));
        }
        return layer;
    }

    [SkippableTheory]
    [InlineData(WeightQuantization.Int8, 1, 3, 16, true)]
    [InlineData(WeightQuantization.Int8, 1, 130, 512, true)]
    [InlineData(WeightQuantization.Int4, 1, 65, 512, true)]
    [InlineData(WeightQuantization.Int8, 8, 257, 1024, false)]
    [InlineData(WeightQuantization.Int8, 5, 64, 4096, true)]
    [InlineData(WeightQuantization.Int4, 1, 3, 32, true)]
    [InlineData(WeightQuantization.Int4, 7, 129, 1024, true)]
    [InlineData(WeightQuantization.Int4, 2, 64, 4096, false)]
    public void Each_product_is_the_dequantized_weights_times_the_input_to_float32_accumulation(WeightQuantization kind, int m, int n, int k, bool withBias)
    {
        Skip.IfNot(QuantizedMatrixRows.Available && CpuKernelOptions.Supported,
            "this machine cannot run the quantized kernel's float path (no AVX-512 or no libtorch libgomp), or it is switched off");
        using var floatInputs = CpuKernelOptions.InThisFlow(CpuKernelOptions.Current with { QuantizedInputs = false });
        using var scope = NewDisposeScope();
        using var layer = Layer(n, k, withBias, (ulong)(m * 31 + n * 7 + k));
        var original = layer.weight!.clone();
        QuantizedLinear.Quantize(layer, kind);
        Assert.True(QuantizedLinear.TryGet(layer, out var q));
        var x = randn(m, k, generator: new TorchSharp.torch.Generator(9));
        long calls = QuantizedMatrixRows.Calls, integerCalls = QuantizedMatrixRows.IntegerCalls;
        Tensor ours;
        using (inference_mode()) ours = layer.Apply(x);
        Assert.Equal(calls + 1, QuantizedMatrixRows.Calls);
        Assert.Equal(integerCalls, QuantizedMatrixRows.IntegerCalls);

        var w = QuantizedLinear.Dequantize(q, ScalarType.Float64);
        var x64 = x.to(ScalarType.Float64);
        var exact = x64.matmul(w.t());
        var magnitude = x64.abs().matmul(w.abs().t());
        if (withBias) { exact += layer.bias!.to(ScalarType.Float64); magnitude += layer.bias!.to(ScalarType.Float64).abs(); }
        var error = (ours.to(ScalarType.Float64) - exact).abs();
        double excess = (error - magnitude * ((k + 2) * Math.Pow(2, -24))).max().item<double>();
        var libtorch = nn.functional.linear(x, QuantizedLinear.Dequantize(q, ScalarType.Float32), layer.bias).to(ScalarType.Float64);
        double theirs = (libtorch - exact).abs().max().item<double>(), mine = error.max().item<double>();
        // The quantization itself: every weight within half a step of its float value.
        var steps = kind == WeightQuantization.Int8 ? q.Scales : q.Scales.repeat_interleave(QuantizedLinear.Group, 1);
        double step = ((w - original.to(ScalarType.Float64)).abs() - steps.to(ScalarType.Float64) / 2).max().item<double>();
        double relative = ((x64.matmul(original.to(ScalarType.Float64).t()) + (withBias ? layer.bias!.to(ScalarType.Float64) : 0) - ours.to(ScalarType.Float64)).norm()
            / (x64.matmul(original.to(ScalarType.Float64).t())).norm()).item<double>();
        output.WriteLine($"{kind} M={m} N={n} K={k}: max abs error {mine:E2} (libtorch on the same weights {theirs:E2}); " +
                         $"relative error against the float weights {relative:E2}");
        Assert.True(excess <= 0, $"an output exceeds its float32 accumulation bound by {excess:E2}");
        Assert.True(mine <= 4 * theirs + Math.Pow(2, -24) * exact.abs().max().item<double>(), "further from exact than libtorch on the same weights");
        Assert.True(step <= 1e-6, $"a stored weight is {step:E2} more than half a step from its float value");
        // Rounding to steps of s = max|w|/127 (or /7 per group of 32) leaves an error of RMS s/√12 per weight: for Gaussian
        // weights ≈ 0.6 % (8 bits; max|w| ≈ 4σ over a row) and ≈ 10 % (4 bits; max|w| ≈ 2.4σ over 32) of the product.
        Assert.True(relative < (kind == WeightQuantization.Int8 ? 0.01 : 0.12), $"relative error {relative:E2} against the float weights");
    }

    // What the integer path multiplies by: each block of 32 inputs at s = max|x| / 127 (float32), q = round(x · (127 / max))
    // with ties to even, so the input becomes s · q; also each input's half step s / 2.
    private static (Tensor Dequantized, Tensor HalfSteps) QuantizedInputs(Tensor x)
    {
        long m = x.shape[0], k = x.shape[1];
        var values = x.data<float>().ToArray();
        var dequantized = new double[values.Length];
        var halfSteps = new double[values.Length];
        for (long row = 0; row < m; row++)
            for (long at = 0; at < k; at += QuantizedInput.Block)
            {
                long start = row * k + at, end = row * k + Math.Min(k, at + QuantizedInput.Block);
                float max = 0;
                for (long i = start; i < end; i++) max = MathF.Max(max, MathF.Abs(values[i]));
                float inverse = max == 0 ? 0 : 127f / max, step = max / 127f;
                for (long i = start; i < end; i++)
                {
                    dequantized[i] = (double)step * MathF.Round(values[i] * inverse);
                    halfSteps[i] = step / 2.0;
                }
            }
        return (tensor(dequantized).view(m, k), tensor(halfSteps).view(m, k));
    }

    [SkippableTheory]
    [InlineData(WeightQuantization.Int8, 1, 3, 16, true)]           // all tail: no whole 64
    [InlineData(WeightQuantization.Int8, 1, 130, 2560, true)]       // one row at a time; 130 rows over two threads
    [InlineData(WeightQuantization.Int8, 1, 131, 4160, false)]      // four rows at a time, 3 left over
    [InlineData(WeightQuantization.Int8, 1, 67, 4208, true)]        // four rows and a 48-input tail
    [InlineData(WeightQuantization.Int8, 3, 64, 112, true)]         // 3 input rows, tail of 48
    [InlineData(WeightQuantization.Int8, 8, 257, 1024, false)]
    [InlineData(WeightQuantization.Int4, 1, 3, 32, true)]           // one group: all tail
    [InlineData(WeightQuantization.Int4, 1, 65, 160, true)]         // one 4-group step and a tail group
    [InlineData(WeightQuantization.Int4, 1, 129, 2560, false)]
    [InlineData(WeightQuantization.Int4, 1, 33, 10240, true)]
    [InlineData(WeightQuantization.Int4, 7, 129, 1056, true)]       // 7 input rows, tail of 1 group
    [InlineData(WeightQuantization.Int4, 2, 64, 4096, false)]
    public void With_quantized_inputs_each_product_is_the_dequantized_weights_times_the_dequantized_inputs(WeightQuantization kind, int m, int n, int k, bool withBias)
    {
        var forms = new List<bool>();
        if (CpuKernelOptions.Supported && System.Runtime.Intrinsics.X86.Avx512BW.IsSupported) forms.Add(true);
        if (CpuKernelOptions.SupportedAvx2) forms.Add(false);
        Skip.If(!QuantizedMatrixRows.Available || forms.Count == 0,
            "this machine cannot run the quantized kernel's integer path (neither AVX-512 BW nor AVX2, or no libtorch libgomp), or it is switched off");
        foreach (bool avx512 in forms)
            using (CpuKernelOptions.InThisFlow(CpuKernelOptions.Current with { QuantizedInputs = true, Avx512 = avx512 }))
                CheckQuantizedInputs(kind, m, n, k, withBias, avx512 ? "AVX-512" : "AVX2");
    }

    private void CheckQuantizedInputs(WeightQuantization kind, int m, int n, int k, bool withBias, string form)
    {
        using var scope = NewDisposeScope();
        using var layer = Layer(n, k, withBias, (ulong)(m * 37 + n * 5 + k));
        var original = layer.weight!.clone();
        QuantizedLinear.Quantize(layer, kind);
        Assert.True(QuantizedLinear.TryGet(layer, out var q));
        if (kind == WeightQuantization.Int8)
            using (no_grad()) q.Values[0] = full(k, -128, ScalarType.Int8);     // a loaded file may hold −128: |−128| is 128 as u8
        var x = randn(m, k, generator: new TorchSharp.torch.Generator(10)).mul_(2);
        x[0, 0] = 9;                                                             // an outlier in the first block
        if (k >= 64) x[0].narrow(0, 32, 32).zero_();                             // an all-zero block
        long calls = QuantizedMatrixRows.IntegerCalls;
        Tensor ours;
        using (inference_mode()) ours = layer.Apply(x);
        Assert.Equal(calls + 1, QuantizedMatrixRows.IntegerCalls);

        var w = QuantizedLinear.Dequantize(q, ScalarType.Float64);
        var (xq, halfSteps) = QuantizedInputs(x);
        var bias = withBias ? layer.bias!.to(ScalarType.Float64) : zeros(n, ScalarType.Float64);
        var exact = xq.matmul(w.t()) + bias;
        var magnitude = xq.abs().matmul(w.abs().t()) + bias.abs();
        var error = (ours.to(ScalarType.Float64) - exact).abs();
        double excess = (error - magnitude * ((k + 2) * Math.Pow(2, -24))).max().item<double>();
        // Against the float input: the weights times each input's half step bounds what quantizing the input moves.
        var unquantized = x.to(ScalarType.Float64).matmul(w.t()) + bias;
        var inputBound = halfSteps.matmul(w.abs().t()) + magnitude * ((k + 2) * Math.Pow(2, -24));
        double inputExcess = ((ours.to(ScalarType.Float64) - unquantized).abs() - inputBound).max().item<double>();
        double moved = ((ours.to(ScalarType.Float64) - unquantized).norm() / unquantized.norm()).item<double>();
        double relative = ((ours.to(ScalarType.Float64) - x.to(ScalarType.Float64).matmul(original.to(ScalarType.Float64).t()) - bias).norm()
                           / x.to(ScalarType.Float64).matmul(original.to(ScalarType.Float64).t()).norm()).item<double>();
        output.WriteLine($"{form} {kind} M={m} N={n} K={k}: max abs error {error.max().item<double>():E2} against the dequantized weights times the " +
                         $"dequantized inputs; quantizing the inputs moves the product by {moved:E2} (relative); against the float weights and " +
                         $"inputs {relative:E2}");
        Assert.True(excess <= 0, $"an output exceeds its float32 accumulation bound by {excess:E2}");
        Assert.True(inputExcess <= 0, $"an output moves {inputExcess:E2} more than its inputs' half steps allow");
        // 8-bit inputs per block of 32 of Gaussian values: RMS s/√12 with s ≈ 2.2σ/127, about 0.5 % of the product.
        Assert.True(moved < 0.02, $"quantizing the inputs moved the product by {moved:E2}");
    }

    [SkippableTheory]
    [InlineData(WeightQuantization.Int8, 1)]
    [InlineData(WeightQuantization.Int8, 3)]
    [InlineData(WeightQuantization.Int4, 1)]
    [InlineData(WeightQuantization.Int4, 3)]
    public void Several_layers_in_one_pass_give_each_layer_its_own_product_exactly(WeightQuantization kind, int m)
    {
        Skip.If(!QuantizedMatrixRows.Available, "this machine cannot run the quantized kernel, or it is switched off");
        var paths = new List<(string Name, CpuKernelOptions Options)>();
        if (CpuKernelOptions.Supported) paths.Add(("float inputs", CpuKernelOptions.Current with { QuantizedInputs = false }));
        if (CpuKernelOptions.Supported && System.Runtime.Intrinsics.X86.Avx512BW.IsSupported) paths.Add(("8-bit inputs, AVX-512", CpuKernelOptions.Current with { QuantizedInputs = true }));
        if (CpuKernelOptions.SupportedAvx2) paths.Add(("8-bit inputs, AVX2", CpuKernelOptions.Current with { QuantizedInputs = true, Avx512 = false }));
        using var scope = NewDisposeScope();
        // Different heights, one without a bias, one with a tail of rows for the four-row blocks: the jobs must not mix.
        const int k = 1056;
        var layers = new[] { Layer(130, k, true, 1), Layer(64, k, false, 2), Layer(33, k, true, 3) };
        foreach (var layer in layers) QuantizedLinear.Quantize(layer, kind);
        var x = randn(m, k, generator: new TorchSharp.torch.Generator(4));
        foreach (var (name, options) in paths)
            using (CpuKernelOptions.InThisFlow(options))
            using (inference_mode())
            {
                var alone = layers.Select(l => l.Apply(x)).ToArray();
                long calls = QuantizedMatrixRows.Calls;
                var together = LinearExtensions.ApplyEach(x, layers);
                Assert.Equal(calls + layers.Length, QuantizedMatrixRows.Calls);
                for (int i = 0; i < layers.Length; i++)
                {
                    Assert.Equal(alone[i].shape, together[i].shape);
                    double difference = (together[i] - alone[i]).abs().max().item<float>();
                    output.WriteLine($"{name} {kind} M={m} layer {i}: max abs difference from its own call {difference:E2}");
                    Assert.True(difference == 0, $"{name}: layer {i}'s product in the shared pass differs from its own call by {difference:E2}");
                }
            }
        // Layers quantized differently do not share a pass: each gets its own call, with the same products.
        using var other = Layer(64, k, true, 5);
        QuantizedLinear.Quantize(other, kind == WeightQuantization.Int8 ? WeightQuantization.Int4 : WeightQuantization.Int8);
        Assert.True(QuantizedLinear.TryGet(layers[0], out var first));
        Assert.True(QuantizedLinear.TryGet(other, out var second));
        using (inference_mode())
        {
            Assert.False(QuantizedMatrixRows.TryLinearEach(x, [(first, layers[0].bias), (second, other.bias)], out _));
            // Nor do more layers than one pass takes (their jobs live on the stack).
            Assert.False(QuantizedMatrixRows.TryLinearEach(x, Enumerable.Repeat<(QuantizedLinear.Weights, Tensor?)>((first, layers[0].bias), 9).ToList(), out _));
            var mixed = LinearExtensions.ApplyEach(x, layers[0], other);
            Assert.Equal(0, (mixed[0] - layers[0].Apply(x)).abs().max().item<float>());
            Assert.Equal(0, (mixed[1] - other.Apply(x)).abs().max().item<float>());
        }
    }

    [Fact]
    public void A_quantized_layer_keeps_its_names_and_products_outside_the_kernel_use_the_dequantized_weights()
    {
        using var scope = NewDisposeScope();
        using var layer = Layer(48, 64, true, 3);
        var x = randn(QuantizedLinear.KernelRows + 1, 64, generator: new TorchSharp.torch.Generator(4));   // past the kernel's passes
        QuantizedLinear.Quantize(layer, WeightQuantization.Int4);
        var state = layer.state_dict();
        Assert.Equal(ScalarType.Byte, state["weight"].dtype);
        Assert.Equal(new long[] { 48, 32 }, state["weight"].shape);
        Assert.Equal(new long[] { 48, 2 }, state["weight_scale"].shape);
        Assert.True(QuantizedLinear.TryGet(layer, out var q));
        using var inference = inference_mode();
        var expected = nn.functional.linear(x, QuantizedLinear.Dequantize(q, ScalarType.Float32), layer.bias);
        Assert.True(layer.Apply(x).allclose(expected, rtol: 0, atol: 0), "the fallback product differs from libtorch on the dequantized weights");
        if (QuantizedMatrixRows.Available && CpuKernelOptions.Supported)
        {
            using var floatInputs = CpuKernelOptions.InThisFlow(CpuKernelOptions.Current with { QuantizedInputs = false });
            // A prefill's 12 rows: two passes of the kernel over the integers, not the dequantized weights.
            var rows = x.narrow(0, 0, 12);
            long calls = QuantizedMatrixRows.Calls;
            var passes = layer.Apply(rows);
            Assert.Equal(calls + 2, QuantizedMatrixRows.Calls);
            double apart = (passes - expected.narrow(0, 0, 12)).abs().max().item<float>();
            output.WriteLine($"12 rows in two kernel passes vs libtorch on the dequantized weights: {apart:E2}");
            Assert.True(apart < 1e-5, $"the kernel's passes differ by {apart:E2}");
        }

        using var odd = Layer(8, 40, false, 5);                       // 40 inputs: not a multiple of 32
        QuantizedLinear.Quantize(odd, WeightQuantization.Int4);
        Assert.True(QuantizedLinear.TryGet(odd, out var kept));
        Assert.Equal(WeightQuantization.Int8, kept.Kind);
    }

    [Theory]
    [InlineData(WeightQuantization.Int8)]
    [InlineData(WeightQuantization.Int4)]
    public void Quantizing_in_blocks_of_rows_gives_what_each_row_alone_gives(WeightQuantization kind)
    {
        using var scope = NewDisposeScope();
        long k = 4096, n = QuantizedLinear.BlockBytes / (4 * k) * 2 + 3;   // two whole blocks and a ragged third
        var weight = randn(n, k, ScalarType.BFloat16, generator: new TorchSharp.torch.Generator(11)).mul_(0.05);
        weight[5] = zeros(k, ScalarType.BFloat16);                          // a zero row keeps scale 1
        var (values, scales) = QuantizedLinear.QuantizeWeight(weight, kind);
        foreach (long row in new long[] { 0, 5, n / 2, n - 4, n - 1 })
        {
            var (v, s) = QuantizedLinear.QuantizeWeight(weight.narrow(0, row, 1), kind);
            Assert.True(values.narrow(0, row, 1).eq(v).all().item<bool>(), $"row {row}'s integers differ from quantizing it alone");
            Assert.True(scales.narrow(0, row, 1).eq(s).all().item<bool>(), $"row {row}'s scales differ from quantizing it alone");
        }
        Assert.Equal(1f, scales[5].max().item<float>());
        Assert.Throws<ArgumentException>(() => QuantizedLinear.QuantizeWeight(zeros(4, 40), WeightQuantization.Int4));
        Assert.Throws<ArgumentException>(() => QuantizedLinear.QuantizeWeight(zeros(4, 32, ScalarType.Int64), kind));
    }

    [Fact]
    public async Task The_trained_model_captions_unseen_scenes_in_8_and_4_bits_as_in_float32()
    {
        var (fp32, _, reference) = await Evaluate.CaptionsAsync(Repo.ShapesModel, seed: 424242, count: 200);
        foreach (var (kind, points, identical) in new[] { (WeightQuantization.Int8, 0.5, 0.95), (WeightQuantization.Int4, 3.0, 0.0) })
        {
            var (accuracy, _, captions) = await Evaluate.CaptionsAsync(Repo.ShapesModel, seed: 424242, count: 200, quantization: kind);
            double same = captions.Zip(reference).Count(p => p.First == p.Second) / (double)captions.Count;
            output.WriteLine($"{kind}: exact-match accuracy {accuracy:P1} (float32 {fp32:P1}), captions identical to float32's {same:P1}");
            Assert.True((fp32 - accuracy) * 100 <= points, $"{kind} loses {(fp32 - accuracy) * 100:F1} points");
            Assert.True(same >= identical, $"{kind}: only {same:P1} of the captions are float32's");
        }
    }

    [SkippableFact]
    public void A_quantized_decode_step_runs_the_kernel_and_gives_the_dequantized_paths_ids()
    {
        Skip.IfNot(QuantizedMatrixRows.Available && CpuKernelOptions.Supported && System.Runtime.Intrinsics.X86.Avx512BW.IsSupported,
            "this machine cannot run the quantized kernel's AVX-512 paths, or it is switched off");
        using var captioner = Blip2Captioner.FromPretrained(Repo.ShapesModel, quantization: WeightQuantization.Int8);
        using var inputs = captioner.Processor.Process([ImageDecoder.Decode(Repo.Scene1)], [""]);
        long[] Ids()
        {
            using var result = captioner.Model.Generate(inputs.PixelValues, inputs.InputIds, inputs.AttentionMask, new GenerationOptions { MaxNewTokens = 20 });
            return result.Sequences[0];
        }
        long[] Path(CpuKernelOptions options, out long calls, out long integerCalls)
        {
            using var path = CpuKernelOptions.InThisFlow(options);
            long before = QuantizedMatrixRows.Calls, integersBefore = QuantizedMatrixRows.IntegerCalls;   // per thread: generation runs on this one
            var ids = Ids();
            (calls, integerCalls) = (QuantizedMatrixRows.Calls - before, QuantizedMatrixRows.IntegerCalls - integersBefore);
            return ids;
        }
        var current = CpuKernelOptions.Current;
        var floatInputs = Path(current with { QuantizedInputs = false }, out long floatCalls, out long floatIntegerCalls);
        var dequantized = Path(current with { Quantized = false }, out long libtorchCalls, out _);
        var integers = Path(current with { QuantizedInputs = true }, out long integerPathCalls, out long integerCalls);
        var avx2 = Path(current with { QuantizedInputs = true, Avx512 = false }, out _, out long avx2Calls);
        string Text(long[] ids) => captioner.Processor.Tokenizer.Decode(ids);
        output.WriteLine($"int8 caption with float inputs \"{Text(floatInputs)}\" ({floatCalls} products in the kernel), with 8-bit inputs " +
                         $"\"{Text(integers)}\" ({integerCalls} in integers; AVX2 form \"{Text(avx2)}\"), dequantized weights through libtorch \"{Text(dequantized)}\"");
        // The two integer forms add the same exact integer sums in another order: the same ids.
        Assert.True(avx2Calls > 0, "the AVX2 form never ran");
        Assert.Equal(integers, avx2);
        Assert.True(floatCalls > 0 && floatIntegerCalls == 0, "the float-input decode never reached the kernel's float path");
        Assert.True(integerCalls > 0 && integerCalls == integerPathCalls, "the decode never reached the kernel's integer path");
        Assert.Equal(0, libtorchCalls);
        Assert.Equal(dequantized, floatInputs);
    }

    [Fact]
    public async Task The_sample_and_the_server_take_the_option_and_answer_what_the_library_answers()
    {
        string expected;
        using (var captioner = Blip2Captioner.FromPretrained(Repo.ShapesModel, quantization: WeightQuantization.Int4))
            expected = (await captioner.CaptionAsync(Repo.Scene1)).Text;
        var (code, stdout, stderr) = Repo.Run(Repo.Dotnet, [Repo.CaptionSample, "--quantize", "int4", Repo.Scene1], Repo.Root, TimeSpan.FromMinutes(2));
        output.WriteLine(stdout + stderr);
        Assert.Equal(0, code);
        Assert.Contains(expected, stdout);
        var bad = Repo.Run(Repo.Dotnet, [Repo.CaptionSample, "--quantize", "int3", Repo.Scene1], Repo.Root, TimeSpan.FromMinutes(2));
        Assert.Equal(2, bad.ExitCode);
        Assert.Equal("error: --quantize 'int3': expected none, int8 or int4.", bad.Stderr.Trim());

        using var factory = new Microsoft.AspNetCore.Mvc.Testing.WebApplicationFactory<Program>().WithWebHostBuilder(b => b
            .UseSetting("Multimodal:Models:0:Name", "shapes-int4").UseSetting("Multimodal:Models:0:Path", Repo.ShapesModel)
            .UseSetting("Multimodal:Models:0:Quantize", "Int4"));
        var client = factory.CreateClient();
        await Server.ServerFixture.WaitReady(client);
        string body = "{\"model\":\"shapes-int4\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\",\"image_url\":{\"url\":\""
            + Server.ServerFixture.Scene1DataUri + "\"}}]}]}";
        var response = await client.PostAsync("/v1/chat/completions", new StringContent(body, System.Text.Encoding.UTF8, "application/json"));
        string json = await response.Content.ReadAsStringAsync();
        output.WriteLine(json);
        Assert.True(response.IsSuccessStatusCode, json);
        Assert.Equal(expected, (string?)System.Text.Json.Nodes.JsonNode.Parse(json)!["choices"]![0]!["message"]!["content"]);
    }
}
