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
/// on the same weights; layers keep their names; the trained model captions unseen scenes as in float32.</summary>
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
        Skip.IfNot(QuantizedMatrixRows.Available, "this machine cannot run the quantized kernel (no AVX-512 or no libtorch libgomp), or it is switched off");
        using var scope = NewDisposeScope();
        using var layer = Layer(n, k, withBias, (ulong)(m * 31 + n * 7 + k));
        var original = layer.weight!.clone();
        QuantizedLinear.Quantize(layer, kind);
        Assert.True(QuantizedLinear.TryGet(layer, out var q));
        var x = randn(m, k, generator: new TorchSharp.torch.Generator(9));
        long calls = QuantizedMatrixRows.Calls;
        Tensor ours;
        using (inference_mode()) ours = layer.Apply(x);
        Assert.Equal(calls + 1, QuantizedMatrixRows.Calls);

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
        if (QuantizedMatrixRows.Available)
        {
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
        Skip.IfNot(QuantizedMatrixRows.Available, "this machine cannot run the quantized kernel, or it is switched off");
        using var captioner = Blip2Captioner.FromPretrained(Repo.ShapesModel, quantization: WeightQuantization.Int8);
        using var inputs = captioner.Processor.Process([ImageDecoder.Decode(Repo.Scene1)], [""]);
        long[] Ids()
        {
            using var result = captioner.Model.Generate(inputs.PixelValues, inputs.InputIds, inputs.AttentionMask, new GenerationOptions { MaxNewTokens = 20 });
            return result.Sequences[0];
        }
        long calls = QuantizedMatrixRows.Calls;                  // per thread: generation runs on this one
        var withKernel = Ids();
        long used = QuantizedMatrixRows.Calls - calls;
        var before = CpuKernelOptions.Current;
        long[] dequantized;
        try
        {
            CpuKernelOptions.Current = before with { Quantized = false };
            dequantized = Ids();
        }
        finally
        {
            CpuKernelOptions.Current = before;
        }
        output.WriteLine($"int8 caption \"{captioner.Processor.Tokenizer.Decode(withKernel)}\", {used} products in the kernel");
        Assert.True(used > 0, "the decode never reached the quantized kernel");
        Assert.Equal(dequantized, withKernel);
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
