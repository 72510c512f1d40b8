// Performance benchmark (not a test): builds random-weight BLIP-2 checkpoints with published dimensions,
// measures this machine's limits in the same run (read and copy bandwidth, float32/bfloat16 GEMM, raw file
// read with the page cache dropped), then load, first token, decode per token, caption, peak RSS and batch
// throughput through the public API, each printed as a ratio to its floor, and one JSON line.
//   dotnet run -c Release --project samples/Multimodal.Benchmarks [-- --preset small|2.7b|both
//       --dir <folder; default: the temp folder's multimodal-bench> --new-tokens 20 --dtype float32|bfloat16 --batches 1,4,8
//       --serving-tokens 20,64,128 (answer lengths for the serving figure; the server caps answers at 256; 0: no serving or
//       batch figures) --runs cold_float32,warm_float32,warm_bfloat16,warm_int8,warm_int4 (a subset)]
// Each load runs in a fresh child process (--measure), so its peak RSS is the load's own. Each child decodes twice: once
// uninterrupted (the figures above), once with one plain pass over the step's own weight bytes (WeightStream) before every
// step, so each step is judged against the same memory at the same moment and split into time in our kernels and outside.
// --hostile-mix 1 [--seconds 60 --good 8 --hostile 2 --budget-mb 300]: the server under a hostile mix (see HostileMix).
// --floors-only 1: only this machine's limits (the decode floor's two candidates side by side), then exit.
// --kernels 1 [--formats float32,bfloat16,int8,int4,int4 avx2]: the floors, then each decode-step linear of the preset
//     alone per weight format against a plain pass over the same bytes (KernelRates), then exit.
using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using Multimodal.Benchmarks;
using static TorchSharp.torch;

var options = Args.Parse(args);
if (options.Get("--hostile-mix") is not null)
{
    Console.WriteLine(HostileMix.Run(options).ToJsonString());
    return;
}
set_num_threads(Environment.ProcessorCount);
if (options.Get("--measure") is string measureFolder)
{
    Console.WriteLine(Measurement.Run(measureFolder, options).ToJsonString());
    return;
}

string presetArg = options.Get("--preset") ?? "both";
string root = options.Get("--dir") ?? Path.Combine(Path.GetTempPath(), "multimodal-bench");
string[] presets = presetArg == "both" ? ["small", "2.7b"] : [presetArg];
Console.WriteLine($"{Environment.ProcessorCount} cores, {get_num_threads()} torch threads; measuring floors…");
var floors = Floors.Measure();
Console.WriteLine($"floors: read {floors.ReadGBps:F1} GB/s (best of libtorch sum() {floors.TorchSumGBps:F1} and a plain matrix-vector loop on the OpenMP team {floors.StreamGBps:F1}), " +
                  $"copy {floors.CopyGBps:F1} GB/s, GEMM fp32 {floors.Fp32Gflops:F0} GFLOP/s, bf16 {floors.Bf16Gflops:F0} GFLOP/s");
if (options.Get("--floors-only") is not null) return;
if (options.Get("--kernels") is not null)
{
    foreach (var preset in presetArg == "both" ? ["small", "2.7b"] : new[] { presetArg }) KernelRates.Measure(Presets.Named(preset), options.Get("--formats")?.Split(','));
    return;
}
var summary = new JsonObject
{
    ["floors"] = new JsonObject { ["read_gbps"] = floors.ReadGBps, ["torch_sum_gbps"] = floors.TorchSumGBps, ["stream_gbps"] = floors.StreamGBps, ["copy_gbps"] = floors.CopyGBps, ["gemm_fp32_gflops"] = floors.Fp32Gflops, ["gemm_bf16_gflops"] = floors.Bf16Gflops },
};
foreach (var preset in presets)
{
    var config = Presets.Named(preset);
    string folder = Path.Combine(root, $"blip2-{preset}");
    Console.WriteLine($"\n== {preset}: writing or reusing {folder}");
    var shards = Checkpoints.Write(folder, config, ScalarType.Float32, Presets.ShardBytes(preset));
    double fileGB = shards.Sum(f => new FileInfo(f).Length) / 1e9;
    double rawCold = Floors.RawRead(shards, cold: true);
    double rawWarm = Floors.RawRead(shards, cold: false);
    Console.WriteLine($"raw sequential read of {fileGB:F2} GB: cold {rawCold:F2} s ({fileGB / rawCold:F2} GB/s), warm {rawWarm:F2} s ({fileGB / rawWarm:F2} GB/s)");
    var result = new JsonObject { ["file_gb"] = fileGB, ["raw_read_cold_s"] = rawCold, ["raw_read_warm_s"] = rawWarm };
    // --runs cold_float32,warm_int8,…: only these (default: all five).
    var runs = options.Get("--runs")?.Split(',');
    foreach (var (label, cold, dtype) in new[] { ("cold", true, "float32"), ("warm", false, "float32"), ("warm", false, "bfloat16"), ("warm", false, "int8"), ("warm", false, "int4") })
    {
        if (runs is not null && !runs.Contains($"{label}_{dtype}")) continue;
        if (cold) foreach (var f in shards) Floors.DropPageCache(f);
        // Quantized runs load float32 and quantize the language model's linears (load time includes the quantizing).
        var extra = new List<string> { "--measure", folder, "--new-tokens", options.Get("--new-tokens") ?? "20" };
        extra.AddRange(dtype is "int8" or "int4" ? ["--dtype", "float32", "--quantize", dtype] : ["--dtype", dtype]);
        if (preset == "small" && dtype == "float32" && !cold && options.Get("--serving-tokens") != "0")
            extra.AddRange(["--batches", options.Get("--batches") ?? "1,4,8", "--serving", Path.Combine(Checkpoints.RepositoryRoot(), "samples", "images"),
                "--serving-tokens", options.Get("--serving-tokens") ?? "20,64,128"]);
        var m = Child(extra);
        Report(preset, label, dtype, m, floors, cold ? rawCold : rawWarm);
        if (result["warm_float32"]?["ids"] is JsonArray reference && dtype != "float32")
        {
            var ids = m["ids"]!.AsArray().Select(n => n!.GetValue<long>()).ToList();
            var expected = reference.Select(n => n!.GetValue<long>()).ToList();
            int same = ids.Zip(expected).TakeWhile(p => p.First == p.Second).Count();
            Console.WriteLine($"   greedy ids: the first {same} of {expected.Count} equal float32's" + (same == expected.Count ? " (all)" : ""));
        }
        result[$"{label}_{dtype}"] = m;
    }
    summary[preset] = result;
}
Console.WriteLine(summary.ToJsonString());

static JsonObject Child(IEnumerable<string> arguments)
{
    var start = new ProcessStartInfo(Environment.ProcessPath!) { RedirectStandardOutput = true };
    if (Path.GetFileNameWithoutExtension(Environment.ProcessPath!) == "dotnet") start.ArgumentList.Add(typeof(Args).Assembly.Location);
    foreach (var a in arguments) start.ArgumentList.Add(a);
    using var child = Process.Start(start)!;
    string? last = null;
    while (child.StandardOutput.ReadLine() is string line) { last = line; if (!line.StartsWith('{')) Console.WriteLine("  " + line); }
    child.WaitForExit();
    if (child.ExitCode != 0 || last is null || !last.StartsWith('{')) throw new InvalidOperationException($"measurement child failed (exit {child.ExitCode})");
    return JsonNode.Parse(last)!.AsObject();
}

static void Report(string preset, string label, string dtype, JsonObject m, Floors floors, double rawRead)
{
    double Get(string key) => m[key]!.GetValue<double>();
    double weightGB = Get("lm_weight_bytes") / 1e9, gflop = Get("first_token_gflop");
    double decodeFloorMs = weightGB / floors.ReadGBps * 1000;
    double gemm = dtype == "bfloat16" ? floors.Bf16Gflops : floors.Fp32Gflops;
    double firstFloor = gflop / gemm;
    Console.WriteLine($"-- {preset} {dtype} ({label} page cache)");
    Console.WriteLine($"   {"figure",-34} {"ours",10} {"floor",10} {"ratio",7}");
    void Row(string name, double ours, double floor, string unit) =>
        Console.WriteLine($"   {name,-34} {ours,8:F2}{unit,2} {floor,8:F2}{unit,2} {ours / floor,6:F2}x");
    Row("load (vs raw sequential read)", Get("load_s"), rawRead, " s");
    Row("first token (vs FLOPs / GEMM rate)", Get("first_token_s"), firstFloor, " s");
    Row("decode per token (vs LM bytes / read)", Get("per_token_ms"), decodeFloorMs, "ms");
    if (m["stepwise"] is JsonObject steps) StepwiseReport(steps, weightGB);
    Row("caption, 20 new tokens", Get("caption_s"), firstFloor + 19 * decodeFloorMs / 1000, " s");
    Console.WriteLine($"   peak RSS {Get("peak_rss_mb"):F0} MB = {Get("peak_rss_mb") * 1e6 / Get("parameter_bytes"):F3}x the parameter bytes ({Get("parameter_bytes") / 1e9:F2} GB)");
    // What a load must hold at once: the model as loaded plus the largest tensor read whole (the runtime, measured before
    // loading, shown beside it).
    double bound = Get("parameter_bytes") + Get("largest_stored_tensor_bytes");
    Console.WriteLine($"   peak RSS = {Get("peak_rss_mb") * 1e6 / bound:F3}x (model {Get("parameter_bytes") / 1e9:F2} GB + largest stored tensor " +
                      $"{Get("largest_stored_tensor_bytes") / 1e9:F2} GB); the runtime alone held {Get("runtime_rss_mb"):F0} MB before loading");
    if (m["serving"] is JsonObject serving)
        foreach (var (tokens, s) in serving)
            Console.WriteLine($"   serving {tokens}-token answers through Blip2Captioner: sequential {s!["sequential_rps"]!.GetValue<double>():F3} requests/s, " +
                              $"8 concurrent clients with dynamic batching {s["concurrent_rps"]!.GetValue<double>():F3} requests/s " +
                              $"({s["concurrent_rps"]!.GetValue<double>() / s["sequential_rps"]!.GetValue<double>():F2}x; largest batch {s["largest_batch"]})");
    if (m["batches"] is JsonObject batches)
    {
        double one = batches["1"]!.GetValue<double>();
        foreach (var (b, v) in batches) Console.WriteLine($"   batch {b}: {v!.GetValue<double>():F3} images/s ({v.GetValue<double>() / one:F2}x batch 1)");
        // Batching shares the language model's weight reads, not the image encoder's arithmetic: even with free
        // decoding, throughput cannot pass one image per (encoder FLOPs / GEMM rate).
        double ceiling = gemm / Get("image_encoder_gflop");
        Console.WriteLine($"   ceiling: the image encoder alone ({Get("image_encoder_gflop"):F0} GFLOP per image at the GEMM rate) allows {ceiling:F3} images/s = {ceiling / one:F2}x batch 1");
    }
}

// Each later step of the probed run against the plain pass over the same bytes just before it, split into the time in our
// kernels (which stream the weights) and the rest (attention, norms, residuals, the generator): medians over the steps, so
// a step the machine stalled does not move them.
static void StepwiseReport(JsonObject steps, double streamGB)
{
    double[] Values(string key) => steps[key]!.AsArray().Select(n => n!.GetValue<double>()).ToArray();
    var (time, kernels, passes) = (Values("step_s"), Values("kernel_s"), Values("pass_s"));
    static double Median(IEnumerable<double> values) { var v = values.Order().ToArray(); return v.Length % 2 == 1 ? v[v.Length / 2] : (v[v.Length / 2 - 1] + v[v.Length / 2]) / 2; }
    var ratios = time.Select((t, i) => t / passes[i]).ToArray();
    var rates = passes.Select(p => streamGB / p).ToArray();
    Console.WriteLine($"   step by step, each against one plain pass over its {streamGB * 1000:F0} MB of weights just before it " +
                      $"({rates.Min():F1}–{rates.Max():F1} GB/s, median {Median(rates):F1}):");
    Console.WriteLine($"     decode per token {Median(time) * 1000:F2} ms = {Median(ratios):F2}x the pass (steps {ratios.Min():F2}–{ratios.Max():F2}x); " +
                      $"in our kernels {Median(kernels) * 1000:F2} ms = {Median(kernels.Select((k, i) => k / passes[i])):F2}x, " +
                      $"outside them {Median(time.Select((t, i) => t - kernels[i])) * 1000:F2} ms = +{Median(time.Select((t, i) => (t - kernels[i]) / passes[i])):F2}x");
}

/// <summary>--key value pairs.</summary>
internal sealed class Args(Dictionary<string, string> values)
{
    public static Args Parse(string[] args)
    {
        var values = new Dictionary<string, string>();
        for (int i = 0; i < args.Length; i++)
        {
            if (!args[i].StartsWith("--")) throw new ArgumentException($"unexpected argument {args[i]}");
            if (i + 1 >= args.Length) throw new ArgumentException($"{args[i]} needs a value");
            values[args[i]] = args[++i];
        }
        return new Args(values);
    }

    public string? Get(string key) => values.GetValueOrDefault(key);
}

/// <summary>One load and generation run in this (child) process.</summary>
internal static class Measurement
{
    public static JsonObject Run(string folder, Args options)
    {
        var dtype = options.Get("--dtype") == "bfloat16" ? ScalarType.BFloat16 : ScalarType.Float32;
        int newTokens = int.Parse(options.Get("--new-tokens") ?? "20", CultureInfo.InvariantCulture);
        var quantization = options.Get("--quantize") switch
        {
            "int8" => Multimodal.Common.WeightQuantization.Int8, "int4" => Multimodal.Common.WeightQuantization.Int4, _ => Multimodal.Common.WeightQuantization.None,
        };
        using (ones(1)) { }                                  // the runtime's own memory, before any weight
        double runtime = PeakRssMb();
        long largestStored;
        using (var weights = Multimodal.Loading.CheckpointFolder.Open(folder))
            largestStored = weights.Tensors.Values.Max(t => t.Shape.Aggregate(1L, (a, b) => a * b) * Multimodal.Loading.SafetensorsDType.SizeOf(t.DType));
        var clock = Stopwatch.StartNew();
        // A quantized load quantizes each language-model weight as it is read (no float copy of the language model).
        using var model = Multimodal.Blip2.Blip2ForConditionalGeneration.FromPretrained(folder, dtype: dtype, quantization: quantization);
        double load = clock.Elapsed.TotalSeconds;
        double peakAfterLoad = PeakRssMb();
        var state = model.state_dict();
        long parameterBytes = state.Where(kv => kv.Key != "language_model.lm_head.weight").Sum(kv => kv.Value.numel() * kv.Value.ElementSize);
        // What a decode step reads (DecodeTensors), the bytes its floor and the per-step pass count.
        var stream = new WeightStream(DecodeTensors(state));
        long lmBytes = stream.Bytes;

        var config = model.Config;
        int prompt = 4;
        var (first, perToken, caption, generated, _) = Generate(model, 1, prompt, newTokens);
        // Again with one plain pass over the same weight bytes before every step (see WeightStream), unless the OpenMP
        // team was not found.
        var stepwise = WeightStream.Available ? Generate(model, 1, prompt, newTokens, stream).Steps : null;
        var result = new JsonObject
        {
            ["dtype"] = quantization == Multimodal.Common.WeightQuantization.None ? dtype.ToString() : quantization.ToString(),
            ["load_s"] = load,
            ["first_token_s"] = first,
            ["per_token_ms"] = perToken * 1000,
            ["stepwise"] = stepwise,
            ["caption_s"] = caption,
            ["ids"] = new JsonArray(generated.Select(id => (JsonNode)id).ToArray()),
            ["peak_rss_mb"] = peakAfterLoad,
            ["runtime_rss_mb"] = runtime,
            ["parameter_bytes"] = parameterBytes,
            ["largest_stored_tensor_bytes"] = largestStored,
            ["lm_weight_bytes"] = lmBytes,
            ["first_token_gflop"] = FirstTokenFlops(state, config, prompt) / 1e9,
            ["image_encoder_gflop"] = ImageEncoderFlops(state, config) / 1e9,
        };
        if (options.Get("--batches") is string list)
        {
            var batches = new JsonObject();
            foreach (var b in list.Split(',').Select(int.Parse))
            {
                var (_, _, total, _, _) = Generate(model, b, prompt, newTokens);
                batches[b.ToString(CultureInfo.InvariantCulture)] = b / total;
            }
            result["batches"] = batches;
        }
        if (options.Get("--serving") is string images)
            result["serving"] = Serving.Measure(folder, dtype, images,
                (options.Get("--serving-tokens") ?? newTokens.ToString(CultureInfo.InvariantCulture)).Split(',').Select(int.Parse).ToList());
        return result;
    }

    // Greedy generation of exactly newTokens tokens from the same (seeded) image in every run; returns the first step (image
    // encode, Q-Former, prefill), the mean later step and the whole call, in seconds, and the first row's ids. With a probe,
    // one pass over the step's weight bytes runs before every step (outside the steps' times), and Steps holds each later
    // step's time, the part of it spent in our kernels (OpenMpTeam.Run: the linear layers' products on the CPU) and the
    // pass before it.
    private static (double First, double PerToken, double Total, long[] Ids, JsonObject? Steps) Generate(
        Multimodal.Blip2.Blip2ForConditionalGeneration model, int batch, int prompt, int newTokens, WeightStream? probe = null)
    {
        using var scope = NewDisposeScope();
        var pixels = randn(batch, 3, 224, 224, generator: new Generator(2024));
        var ids = tensor(new long[] { 2, 102, 1345, 9 }).unsqueeze(0).expand(batch, prompt).contiguous(); // "</s>a photo of"
        var options = new Multimodal.Generation.GenerationOptions { MaxNewTokens = newTokens, MinNewTokens = newTokens };
        var (steps, kernels, passes) = (new List<double>(), new List<double>(), new List<double>());
        double pass = probe?.Pass() ?? 0;
        long ticks = Multimodal.Common.OpenMpTeam.Ticks;
        var step = Stopwatch.StartNew();
        var clock = Stopwatch.StartNew();
        using var output = model.Generate(pixels, ids, null, options, null, (_, _) =>
        {
            steps.Add(step.Elapsed.TotalSeconds);
            kernels.Add((double)(Multimodal.Common.OpenMpTeam.Ticks - ticks) / Stopwatch.Frequency);
            passes.Add(pass);
            if (probe is not null) pass = probe.Pass();
            ticks = Multimodal.Common.OpenMpTeam.Ticks;
            step.Restart();
        }, default);
        double total = clock.Elapsed.TotalSeconds;
        JsonArray Later(List<double> values) => new(values.Skip(1).Select(v => (JsonNode)v).ToArray());
        var detail = probe is null ? null : new JsonObject { ["step_s"] = Later(steps), ["kernel_s"] = Later(kernels), ["pass_s"] = Later(passes) };
        return (steps[0], steps.Skip(1).Average(), total, output.Sequences[0], detail);
    }

    // Linear layers dominate: 2 · weights · rows for the ViT (all patches + class), the Q-Former (32 queries;
    // its cross-attention keys and values over the image tokens), the OPT prefill (queries + prompt) and one
    // row of the LM head; plus attention's 4·T²·d per ViT layer.
    private static double FirstTokenFlops(IReadOnlyDictionary<string, Tensor> state, Multimodal.Blip2.Blip2Config config, int prompt)
    {
        long imageTokens = ImageTokens(config), queries = config.NumQueryTokens, lmRows = queries + prompt;
        double flops = ImageEncoderFlops(state, config);
        foreach (var (name, t) in state)
        {
            if (t.dim() != 2 || name.Contains("embed") || name.Contains("lm_head") || name.StartsWith("vision_model.")) continue;
            long rows = name.StartsWith("qformer.") && name.Contains("crossattention.attention.") && (name.Contains(".key.") || name.Contains(".value.")) ? imageTokens
                : name.StartsWith("qformer.") || name == "query_tokens" || name.StartsWith("language_projection") ? queries
                : lmRows;
            flops += 2.0 * t.numel() * rows;
        }
        var lmHead = state["language_model.lm_head.weight"];
        flops += 2.0 * lmHead.numel();
        return flops;
    }

    // What a decode step reads whole: the language model's tensors (WeightStream reads a tied head once), not the position
    // table, of which it reads one row.
    private static IEnumerable<Tensor> DecodeTensors(IReadOnlyDictionary<string, Tensor> state)
    {
        foreach (var (name, t) in state)
            if (name.StartsWith("language_model.") && !name.Contains("embed_positions")) yield return t;
    }

    // One image through the ViT: the part of a caption whose cost per image batching cannot lower.

    private static double ImageEncoderFlops(IReadOnlyDictionary<string, Tensor> state, Multimodal.Blip2.Blip2Config config)
    {
        var v = config.VisionConfig;
        long imageTokens = ImageTokens(config);
        double flops = state.Where(kv => kv.Key.StartsWith("vision_model.") && kv.Value.dim() == 2 && !kv.Key.Contains("embed"))
            .Sum(kv => 2.0 * kv.Value.numel() * imageTokens);
        return flops + 4.0 * imageTokens * imageTokens * v.HiddenSize * v.NumHiddenLayers;
    }

    private static long ImageTokens(Multimodal.Blip2.Blip2Config config) =>
        (config.VisionConfig.ImageSize / config.VisionConfig.PatchSize) * (config.VisionConfig.ImageSize / config.VisionConfig.PatchSize) + 1;

    private static double PeakRssMb()
    {
        foreach (var line in File.ReadLines("/proc/self/status"))
            if (line.StartsWith("VmHWM:")) return long.Parse(line.Split([' ', '\t'], StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture) * 1024 / 1e6;
        return double.NaN;
    }
}
