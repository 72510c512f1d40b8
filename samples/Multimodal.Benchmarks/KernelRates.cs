using Multimodal.Common;
using static TorchSharp.torch;

namespace Multimodal.Benchmarks;

/// <summary>Each decode-step linear of a preset's language model alone, one row through the library's routing
/// (<see cref="LinearExtensions.Apply"/>), per weight format, against one plain pass over the same layers' bytes
/// (<see cref="WeightStream"/>) just before it: the ratio shows what the kernel loses to the simple loop on the same
/// memory at the same moment (this machine's read rate drifts between ~30 and ~60 GB/s within minutes), and the time per
/// call (the 64-row shape is mostly a call's fixed cost: quantizing the input, the team's fork and join, the output
/// tensor). A decode step that is slower than its kernels is slow outside them (attention, norms, the generator).</summary>
internal static class KernelRates
{
    /// <summary>Prints and returns the median ratio per (format, shape): enough layers of each shape to stream at least
    /// 512 MB, so the caches do not hold them, each pass and each run over the layers timed alone, 7 of each, alternating.</summary>
    public static System.Text.Json.Nodes.JsonObject Measure(Blip2.Blip2Config config, IReadOnlyCollection<string>? only = null)
    {
        var opt = (Language.Opt.OptConfig)config.TextConfig;
        long d = opt.HiddenSize, ffn = opt.FfnDim, vocab = opt.VocabSize;
        var shapes = new (string Name, long N, long K)[] { ("attention d×d", d, d), ("fc1 ffn×d", ffn, d), ("fc2 d×ffn", d, ffn), ("lm head vocab×d", vocab, d), ("tiny 64×d", 64, d) };
        var result = new System.Text.Json.Nodes.JsonObject();
        Console.WriteLine("kernels, one row, each run over the layers against a plain pass over the same bytes just before it (medians of 7):");
        foreach (var format in new[] { "float32", "bfloat16", "int8", "int4", "int4 avx2" }.Where(f => only is null || only.Contains(f)))
            foreach (var (name, n, k) in shapes)
            {
                // The AVX2 form of the 4-bit integer path, on this machine's AVX-512 too: what a machine without AVX-512 runs
                // (8 bits run the AVX2 form everywhere).
                using var form = CpuKernelOptions.InThisFlow(CpuKernelOptions.Current with { Avx512 = !format.EndsWith("avx2") });
                using var scope = NewDisposeScope();
                var dtype = format == "bfloat16" ? ScalarType.BFloat16 : ScalarType.Float32;
                long layerBytes = 0;
                var layers = new List<TorchSharp.Modules.Linear>();
                long target = 512L << 20;
                while (layerBytes * layers.Count < target || layers.Count == 0)
                {
                    var layer = nn.Linear(k, n, hasBias: true, dtype: dtype);
                    using (no_grad()) layer.weight!.normal_(0, 0.02);
                    if (format.StartsWith("int")) QuantizedLinear.Quantize(layer, format.StartsWith("int8") ? WeightQuantization.Int8 : WeightQuantization.Int4);
                    layerBytes = layer.state_dict().Where(kv => kv.Key != "bias").Sum(kv => kv.Value.numel() * kv.Value.ElementSize);
                    layers.Add(layer);
                }
                var stream = new WeightStream(layers.SelectMany(l => l.state_dict().Values));
                var x = randn(1, 1, k).to(dtype);
                var (passes, runs) = (new List<double>(), new List<double>());
                using (inference_mode())
                {
                    foreach (var l in layers) l.Apply(x).Dispose();                         // warm-up
                    for (int rep = 0; rep < 7; rep++)
                    {
                        passes.Add(stream.Pass());
                        var clock = System.Diagnostics.Stopwatch.StartNew();
                        foreach (var l in layers) l.Apply(x).Dispose();
                        runs.Add(clock.Elapsed.TotalSeconds);
                    }
                }
                double Median(IEnumerable<double> v) => v.Order().ElementAt(3);
                double ratio = Median(runs.Select((t, i) => t / passes[i])), bytes = layerBytes * layers.Count;
                Console.WriteLine($"   {format,-10} {name,-16} {n,6}×{k,-6} {bytes / Median(runs) / 1e9,6:F1} GB/s, the pass {bytes / Median(passes) / 1e9,5:F1}: " +
                                  $"{ratio,5:F2}x  {Median(runs) / layers.Count * 1e6,8:F1} µs per call");
                result[$"{format} {name}"] = ratio;
                foreach (var l in layers) l.Dispose();
            }
        return result;
    }
}
