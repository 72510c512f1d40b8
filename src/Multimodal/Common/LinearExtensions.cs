namespace Multimodal.Common;

/// <summary>How language models call their <c>nn.Linear</c> layers (TorchSharp's <c>Linear</c> is sealed, so the
/// choice of kernel sits here rather than in a subclass).</summary>
internal static class LinearExtensions
{
    /// <summary><c>layer.forward(input)</c>; a decode step's single bfloat16 row on the CPU goes through
    /// <see cref="Bf16MatrixVector"/> instead of libtorch (same rounding, about twice the weight bandwidth).</summary>
    public static Tensor Apply(this Linear layer, Tensor input) =>
        Bf16MatrixVector.Applies(input, layer.weight!, layer.bias)
            ? Bf16MatrixVector.Linear(input, layer.weight!, layer.bias)
            : layer.forward(input);
}
