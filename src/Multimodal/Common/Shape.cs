
namespace Multimodal.Common;

/// <summary>Shape checks at module boundaries, so a bad input fails with a message naming the tensor
/// instead of a native error deep inside a matmul.</summary>
internal static class Shape
{
    /// <summary>Requires <paramref name="tensor"/> to have the given rank and, where a dimension is not
    /// <c>-1</c>, that size.</summary>
    public static void Require(Tensor tensor, string name, params long[] dims)
    {
        bool ok = tensor.dim() == dims.Length;
        for (int i = 0; ok && i < dims.Length; i++)
            ok = dims[i] < 0 || tensor.size(i) == dims[i];
        if (!ok)
            throw new ArgumentException(
                $"{name} has shape {Format(tensor.shape)}; expected {Format(dims)} (-1 = any size).", name);
    }

    /// <summary>The sizes of <paramref name="tensor"/>, read one dimension at a time: TorchSharp's <c>shape</c> fills its
    /// array through a pinned native callback, 1–3 µs per call on this machine against ~25 ns for each <c>size(i)</c>, which a
    /// decode step's dozens of shape reads per layer added up to tens of microseconds.</summary>
    public static long[] Of(Tensor tensor)
    {
        var sizes = new long[tensor.dim()];
        for (int i = 0; i < sizes.Length; i++) sizes[i] = tensor.size(i);
        return sizes;
    }

    /// <summary>Formats a shape as <c>[2, 3, 4]</c>.</summary>
    public static string Format(IEnumerable<long> shape) => "[" + string.Join(", ", shape) + "]";
}
