using Multimodal.Common;
using static TorchSharp.torch;

namespace Multimodal.Benchmarks;

/// <summary>Each decode-step linear of a preset's language model alone, one row through the library's routing
/// (<see cref="LinearExtensions.Apply"/>), per weight format: the weight bytes it streams per second beside the streaming
/// floor, and the time per call (the 64-row shape is mostly a call's fixed cost: quantizing the input, the team's fork and
/// join, the output tensor). A decode step that is slower than its kernels is slow outside them (attention, norms, the
/// generator).</summary>
internal static class KernelRates
{
    /// <summary>Prints and returns GB/s per (format, shape): enough layers of each shape to stream at least 512 MB, so
    /// the caches do not hold them, timed as one pass, best of 5.</summary>
    public static System.Text.Json.Nodes.JsonObject Measure(Blip2.Blip2Config config, Floors floors, IReadOnlyCollection<string>? only = null)
    {
        var opt = (Language.Opt.OptConfig)config.TextConfig;
        long d = opt.HiddenSize, ffn = opt.FfnDim, vocab = opt.VocabSize;
        var shapes = new (string Name, long N, long K)[] { ("attention d×d", d, d), ("fc1 ffn×d", ffn, d), ("fc2 d×ffn", d, ffn), ("lm head vocab×d", vocab, d), ("tiny 64×d", 64, d) };
        var result = new System.Text.Json.Nodes.JsonObject();
        Console.WriteLine($"kernels, one row (GB/s of weight bytes; ratio = floor {floors.ReadGBps:F1} GB/s / rate):");
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
                var x = randn(1, 1, k).to(dtype);
                double seconds;
                using (inference_mode()) seconds = Floors.Best(5, () => { foreach (var l in layers) l.Apply(x); });
                double rate = layerBytes * layers.Count / seconds / 1e9;
                Console.WriteLine($"   {format,-10} {name,-16} {n,6}×{k,-6} {rate,6:F1} GB/s  {floors.ReadGBps / rate,5:F2}x  {seconds / layers.Count * 1e6,8:F1} µs per call");
                result[$"{format} {name}"] = rate;
                foreach (var l in layers) l.Dispose();
            }
        return result;
    }
}
