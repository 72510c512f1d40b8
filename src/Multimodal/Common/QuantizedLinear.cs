using System.Runtime.CompilerServices;

namespace Multimodal.Common;

/// <summary>Weight-only quantization of <c>nn.Linear</c> layers. A quantized layer's <c>weight</c> holds the integers
/// (int8 [N, K], or 4-bit pairs packed in uint8 [N, K/2]) and its <c>weight_scale</c> buffer the float32 scales ([N, 1] per
/// channel, or [N, K/32] per group), so <c>state_dict()</c> lists them under the layer's own names; the routing
/// (<see cref="LinearExtensions.Apply"/>) multiplies straight from them.</summary>
/// <remarks>4-bit layout, per group of 32 inputs: byte i (0–15) holds input i in its low nibble and input i + 16 in its high
/// nibble, each stored as q + 8 (q in −8…7), so the two halves of a group unpack into two vectors without shuffles.</remarks>
internal static class QuantizedLinear
{
    /// <summary>Inputs per 4-bit group.</summary>
    public const int Group = 32;

    /// <summary>A quantized layer's operands.</summary>
    internal sealed record Weights(WeightQuantization Kind, Tensor Values, Tensor Scales, long N, long K);

    private static readonly ConditionalWeakTable<Linear, Weights> Quantized = new();

    /// <summary>The layer's quantized weights, when it has been quantized.</summary>
    public static bool TryGet(Linear layer, [System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out Weights? weights) =>
        Quantized.TryGetValue(layer, out weights);

    /// <summary>Quantizes the layer in place: its float weight is replaced by the integers (and freed).</summary>
    public static void Quantize(Linear layer, WeightQuantization kind)
    {
        if (kind == WeightQuantization.None || Quantized.TryGetValue(layer, out _)) return;
        var weight = layer.weight ?? throw new ArgumentException("The layer has no weight.", nameof(layer));
        if (weight.dim() != 2) throw new ArgumentException($"A linear weight is (N, K), not {Shape.Format(weight.shape)}.", nameof(layer));
        kind = Effective(kind, weight.size(1));
        var (values, scales) = QuantizeWeight(weight, kind);
        Install(layer, kind, values, scales);
    }

    // 4 bits need whole groups of 32 inputs; a narrower or ragged layer keeps 8.
    private static WeightQuantization Effective(WeightQuantization kind, long k) =>
        kind == WeightQuantization.Int4 && k % Group != 0 ? WeightQuantization.Int8 : kind;

    // The layer's float weight is replaced by the integers (and freed), the scales become its weight_scale buffer.
    private static void Install(Linear layer, WeightQuantization kind, Tensor values, Tensor scales)
    {
        var weight = layer.weight!;
        long n = weight.size(0), k = weight.size(1);
        using (no_grad())
        {
            layer.weight = new Parameter(values, requires_grad: false);
            layer.register_buffer("weight_scale", scales);
        }
        weight.Dispose();
        // The parameter took over the integers' handle: the layer's own tensors are the ones to read.
        Quantized.Add(layer, new Weights(kind, layer.weight!, scales, n, k));
    }

    // The Linear layers under one of the prefixes, except the named ones.
    private static List<Linear> Layers(nn.Module root, IReadOnlyList<string> prefixes, IReadOnlyCollection<string> except) =>
        root.named_modules()
            .Where(m => m.module is Linear && prefixes.Any(p => m.name.StartsWith(p, StringComparison.Ordinal)) && !except.Contains(m.name))
            .Select(m => (Linear)m.module).ToList();

    /// <summary>The integers and scales of a float (N, K) weight in the layout described on the class, computed a block of
    /// rows at a time so the float temporaries stay at <see cref="BlockBytes"/> whatever the weight's size.</summary>
    /// <param name="weight">(N, K), any floating dtype; for <see cref="WeightQuantization.Int4"/> K is a multiple of 32.</param>
    /// <param name="kind">Int8 or Int4 (see <see cref="Layout"/> for the kind a layer of width K gets).</param>
    internal static (Tensor Values, Tensor Scales) QuantizeWeight(Tensor weight, WeightQuantization kind)
    {
        var (valuesShape, valuesType, scalesShape) = Layout(kind, weight.size(0), weight.dim() == 2 ? weight.size(1) : 0);
        var values = empty(valuesShape, valuesType, weight.device);
        var scales = empty(scalesShape, ScalarType.Float32, weight.device);
        try
        {
            QuantizeWeight(weight, kind, values, scales);
            return (values, scales);
        }
        catch
        {
            values.Dispose();
            scales.Dispose();
            throw;
        }
    }

    /// <summary><see cref="QuantizeWeight(Tensor, WeightQuantization)"/> into tensors of the quantized layout (a loading model's
    /// own, so no integer copy is made).</summary>
    internal static void QuantizeWeight(Tensor weight, WeightQuantization kind, Tensor values, Tensor scales)
    {
        if (weight.dim() != 2 || !weight.is_floating_point())
            throw new ArgumentException($"A linear weight is a float (N, K) matrix, not {weight.dtype} {Shape.Format(weight.shape)}.", nameof(weight));
        long n = weight.size(0), k = weight.size(1);
        if (kind == WeightQuantization.Int4 && k % Group != 0)
            throw new ArgumentException($"4-bit groups of {Group} need a width that is a multiple of {Group}, not {k}.", nameof(kind));
        var (valuesShape, valuesType, scalesShape) = Layout(kind, n, k);
        if (values.dtype != valuesType || !values.shape.SequenceEqual(valuesShape) || scales.dtype != ScalarType.Float32 || !scales.shape.SequenceEqual(scalesShape))
            throw new ArgumentException($"{kind} of a {Shape.Format(weight.shape)} weight fills {valuesType} {Shape.Format(valuesShape)} and float32 " +
                                        $"{Shape.Format(scalesShape)}, not {values.dtype} {Shape.Format(values.shape)} and {scales.dtype} {Shape.Format(scales.shape)}.");
        long rows = Math.Max(1, BlockBytes / (4 * Math.Max(1, k)));
        using (no_grad())
            for (long start = 0; start < n; start += rows)
            {
                using var scope = NewDisposeScope();
                long count = Math.Min(rows, n - start);
                var block = weight.narrow(0, start, count);
                var (q, s) = kind == WeightQuantization.Int8 ? ToInt8(block) : ToInt4(block);
                values.narrow(0, start, count).copy_(q);
                scales.narrow(0, start, count).copy_(s);
            }
    }

    /// <summary>Float bytes a quantizing pass holds at a time.</summary>
    internal const long BlockBytes = 8L << 20;

    /// <summary>The quantized tensors' shapes and dtype for a (N, K) layer quantized as <paramref name="kind"/>.</summary>
    internal static (long[] Values, ScalarType ValuesType, long[] Scales) Layout(WeightQuantization kind, long n, long k) =>
        kind == WeightQuantization.Int8 ? ([n, k], ScalarType.Int8, [n, 1]) : ([n, k / 2], ScalarType.Byte, [n, k / Group]);

    /// <summary>The kind a prepared layer's integer dtype stands for (Int8 → Int8, Byte → Int4), or None.</summary>
    internal static WeightQuantization KindOf(ScalarType valuesType) => valuesType switch
    {
        ScalarType.Int8 => WeightQuantization.Int8,
        ScalarType.Byte => WeightQuantization.Int4,
        _ => WeightQuantization.None,
    };

    // Symmetric, per output channel: q = round(w / s), s = max|w| / 127 (a zero row keeps s = 1).
    private static (Tensor Values, Tensor Scales) ToInt8(Tensor weight)
    {
        var w = weight.to(ScalarType.Float32);
        var max = w.abs().amax([1L], keepdim: true);
        var scale = where(max.EqualTo(0), ones_like(max), max.Over(127));
        return ((w / scale).round().Between(-127, 127).to(ScalarType.Int8), scale);
    }

    // Symmetric, per group of 32: q = round(w / s) in −8…7, s = max|w| / 7; packed as described on the class.
    private static (Tensor Values, Tensor Scales) ToInt4(Tensor weight)
    {
        long n = weight.size(0), k = weight.size(1);
        var w = weight.to(ScalarType.Float32).view(n, k / Group, Group);
        var max = w.abs().amax([2L], keepdim: true);
        var scale = where(max.EqualTo(0), ones_like(max), max.Over(7));
        var q = (w / scale).round().Between(-8, 7).Plus(8).to(ScalarType.Byte);              // (N, G, 32), 0…15
        var packed = q.narrow(2, 0, Group / 2).Plus(q.narrow(2, Group / 2, Group / 2).Times(16));     // low nibble + high nibble · 16
        return (packed.reshape(n, k / 2), scale.reshape(n, k / Group));
    }

    /// <summary>Quantizes every <c>Linear</c> of <paramref name="root"/> whose name starts with one of
    /// <paramref name="prefixes"/> and is not in <paramref name="except"/> (the output head, kept in the model's dtype).</summary>
    /// <returns>the layers quantized.</returns>
    public static int QuantizeAll(nn.Module root, WeightQuantization kind, IReadOnlyList<string> prefixes, IReadOnlyCollection<string> except)
    {
        if (kind == WeightQuantization.None) return 0;
        var layers = Layers(root, prefixes, except);
        foreach (var layer in layers) Quantize(layer, kind);
        return layers.Count;
    }

    /// <summary>Gives every layer <see cref="QuantizeAll"/> would quantize the quantized layout, empty, for a saved quantized
    /// checkpoint to load into (nothing is computed; on the meta device nothing is allocated).</summary>
    public static void PrepareAll(nn.Module root, WeightQuantization kind, IReadOnlyList<string> prefixes, IReadOnlyCollection<string> except)
    {
        if (kind == WeightQuantization.None) return;
        foreach (var layer in Layers(root, prefixes, except)) Prepare(layer, kind);
    }

    private static void Prepare(Linear layer, WeightQuantization kind)
    {
        var weight = layer.weight!;
        long n = weight.size(0), k = weight.size(1);
        kind = Effective(kind, k);
        var (valuesShape, valuesType, scalesShape) = Layout(kind, n, k);
        Install(layer, kind, empty(valuesShape, valuesType, weight.device), empty(scalesShape, ScalarType.Float32, weight.device));
    }

    /// <summary>The weights as floats of <paramref name="dtype"/>, (N, K): what a product outside the kernel multiplies by.</summary>
    public static Tensor Dequantize(Weights q, ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        Tensor w;
        if (q.Kind == WeightQuantization.Int8)
        {
            w = q.Values.to(ScalarType.Float32) * q.Scales;
        }
        else
        {
            var packed = q.Values.view(q.N, q.K / Group, Group / 2);
            var low = packed.Modulo(16);
            var high = packed.FloorOver(16);
            var values = cat([low, high], 2).to(ScalarType.Float32).Minus(8);                    // (N, G, 32)
            w = (values * q.Scales.unsqueeze(2)).view(q.N, q.K);
        }
        return w.to(dtype).MoveToOuterDisposeScope();
    }

    /// <summary>Rows up to which a product reads the integers in passes of 8 rows rather than dequantizing: a prefill (queries
    /// and prompt, a few dozen rows) then reads the weights a few times as integers instead of writing and reading them
    /// as floats.</summary>
    public const int KernelRows = 64;

    /// <summary><c>input · weightᵀ + bias</c> from the quantized weights: up to <see cref="KernelRows"/> rows through
    /// <see cref="QuantizedMatrixRows"/> (8 at a time), anything else through the dequantized weights and libtorch.</summary>
    public static Tensor Product(Tensor input, Weights q, Tensor? bias)
    {
        if (QuantizedMatrixRows.TryLinear(input, q, bias, out var product)) return product;
        using var scope = NewDisposeScope();
        long rows = input.dim() >= 1 && input.size(-1) == q.K ? input.numel() / q.K : 0;
        if (rows > 8 && rows <= KernelRows && input.is_contiguous())
        {
            var flat = input.reshape(rows, q.K);
            var parts = new List<Tensor>();
            for (long start = 0; start < rows; start += 8)
            {
                if (!QuantizedMatrixRows.TryLinear(flat.narrow(0, start, Math.Min(8, rows - start)), q, bias, out var part)) break;
                parts.Add(part);
            }
            if (parts.Count * 8 >= rows)
            {
                var shape = Shape.Of(input);
                shape[^1] = q.N;
                return cat(parts, 0).view(shape).MoveToOuterDisposeScope();
            }
        }
        return nn.functional.linear(input, Dequantize(q, input.dtype), bias).MoveToOuterDisposeScope();
    }
}
