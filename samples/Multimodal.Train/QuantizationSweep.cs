using Multimodal.Blip2;
using Multimodal.Common;
using static TorchSharp.torch;

namespace Multimodal.Train;

/// <summary>Which parts of the model keep their accuracy quantized, and at which 4-bit group size: exact-match accuracy on
/// the 200 unseen scenes and the share of captions identical to float32's, per variant. The language model's 8- and 4-bit
/// rows run the library's own quantized load and kernels (inputs quantized too); the others round a float model's weights
/// to what their quantization would store (the dequantized values) and run in float, which is what the products compute
/// up to the inputs' 8-bit rounding. The weight error is ‖W − Ŵ‖ / ‖W‖ over the rounded layers.</summary>
public static class QuantizationSweep
{
    public static async Task RunAsync(string folder, int seed = 424242, int count = 200)
    {
        var (fp32, _, reference) = await Evaluate.CaptionsAsync(folder, seed, count);
        Console.WriteLine($"{"variant",-58} {"bytes/weight",12} {"accuracy",9} {"identical",10} {"weight error",13}");
        void Row(string name, string bytes, double accuracy, List<string> captions, double weightError = double.NaN) =>
            Console.WriteLine($"{name,-58} {bytes,12} {accuracy,9:P1} {captions.Zip(reference).Count(p => p.First == p.Second) / (double)count,10:P1} " +
                              (double.IsNaN(weightError) ? "" : $"{weightError,12:P2}"));
        Row("float32", "4", fp32, reference);
        foreach (var kind in new[] { WeightQuantization.Int8, WeightQuantization.Int4 })
        {
            var (accuracy, _, captions) = await Evaluate.CaptionsAsync(folder, seed, count, kind);
            Row($"language model {kind} (library)", kind == WeightQuantization.Int8 ? "1 + 4/K" : "0.625", accuracy, captions);
        }
        // 4 bits by group size (each group's float32 scale costs 4/G bytes per weight), on the layers every size divides
        // (K a multiple of 128), the others left in float32: like for like.
        foreach (int group in new[] { 32, 64, 128 })
            await Variant($"LM layers with K % 128 = 0, 4-bit, groups of {group}", $"{0.5 + 4.0 / group:F3}", "language_model.", group, lmHead: false, onlyWhole: true);
        await Variant("language model 4-bit + LM head 8-bit", "", "language_model.", 32, lmHead: true);
        foreach (var (name, prefix) in new[] { ("Q-Former", "qformer."), ("ViT", "vision_model.") })
        {
            await Variant($"{name} 8-bit", "1 + 4/K", prefix, 0, lmHead: false);
            await Variant($"{name} 4-bit, groups of 32", "0.625", prefix, 32, lmHead: false);
        }

        async Task Variant(string name, string bytes, string prefix, int group, bool lmHead, bool onlyWhole = false)
        {
            using var captioner = Blip2Captioner.FromPretrained(folder);
            double error = 0, norm = 0;
            int layers = 0;
            using (no_grad())
                foreach (var (moduleName, module) in captioner.Model.named_modules())
                {
                    if (module is not TorchSharp.Modules.Linear linear || !moduleName.StartsWith(prefix, StringComparison.Ordinal)) continue;
                    bool head = moduleName.EndsWith("lm_head", StringComparison.Ordinal);
                    if (head && !lmHead) continue;
                    var weight = linear.weight!;
                    if (onlyWhole && weight.shape[1] % 128 != 0) continue;
                    layers++;
                    using var rounded = head ? Rounded(weight, 0) : Rounded(weight, group);
                    using var difference = rounded - weight;
                    error += (difference * difference).sum().item<float>();
                    norm += (weight * weight).sum().item<float>();
                    weight.copy_(rounded);
                }
            var (accuracy, _, captions) = await Evaluate.CaptionsAsync(captioner, seed, count);
            Row($"{name} ({layers} layers)", bytes, accuracy, captions, Math.Sqrt(error / norm));
        }
    }

    // What quantizing stores, as floats: 8 bits per output channel (group 0), or 4 bits per group of `group` inputs
    // (a width the group does not divide keeps 8 bits, as the library does).
    private static Tensor Rounded(Tensor weight, int group)
    {
        using var scope = NewDisposeScope();
        // Bounds as 0-dim tensors rather than Scalars: the suite checks this sample makes no temporary Scalar
        // (ScalarLifetimeTests).
        long n = weight.shape[0], k = weight.shape[1];
        var w = weight.to(ScalarType.Float32);
        bool eightBits = group == 0 || k % group != 0;
        var steps = tensor(eightBits ? 127f : 7f);
        var low = tensor(eightBits ? -127f : -8f);
        var high = tensor(eightBits ? 127f : 7f);
        var grouped = eightBits ? w : w.view(n, k / group, group);
        var scale = maximum(grouped.abs().amax([grouped.dim() - 1], keepdim: true), tensor(1e-30f)) / steps;
        var result = minimum(maximum((grouped / scale).round(), low), high).mul(scale).view(n, k);
        return result.to(weight.dtype).MoveToOuterDisposeScope();
    }
}
