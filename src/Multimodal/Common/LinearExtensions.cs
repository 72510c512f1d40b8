namespace Multimodal.Common;

/// <summary>How language models call their <c>nn.Linear</c> layers (TorchSharp's <c>Linear</c> is sealed, so the
/// choice of kernel sits here rather than in a subclass).</summary>
internal static class LinearExtensions
{
    [ThreadStatic] private static bool _libtorchOnly;

    /// <summary><c>layer.forward(input)</c>. On the CPU, decode steps' products go to our kernels where they were
    /// measured to beat libtorch: one bfloat16 row to <see cref="Bf16MatrixVector"/>, 5–8 float32 rows (a batch's
    /// step) to <see cref="Float32FewRows"/>.</summary>
    public static Tensor Apply(this Linear layer, Tensor input)
    {
        var (weight, bias) = (layer.weight!, layer.bias);
        if (_libtorchOnly) return layer.forward(input);
        if (Bf16MatrixVector.Applies(input, weight, bias)) return Bf16MatrixVector.Linear(input, weight, bias);
        if (Float32FewRows.Applies(input, weight, bias)) return Float32FewRows.Linear(input, weight, bias);
        return layer.forward(input);
    }

    /// <summary>Sends this thread's <see cref="Apply"/> calls to libtorch until disposed (tests compare both paths).</summary>
    internal static IDisposable LibtorchOnlyOnThisThread()
    {
        bool before = _libtorchOnly;
        _libtorchOnly = true;
        return new Restore(() => _libtorchOnly = before);
    }

    private sealed class Restore(Action undo) : IDisposable
    {
        public void Dispose() => undo();
    }
}
