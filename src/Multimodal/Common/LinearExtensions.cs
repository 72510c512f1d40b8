namespace Multimodal.Common;

/// <summary>How language models call their <c>nn.Linear</c> layers (TorchSharp's <c>Linear</c> is sealed, so the
/// choice of kernel sits here rather than in a subclass).</summary>
internal static class LinearExtensions
{
    [ThreadStatic] private static bool _libtorchOnly;

    /// <summary><c>layer.forward(input)</c>. On the CPU, decode steps' products go to our kernels where they were
    /// measured to beat libtorch: one bfloat16 row to <see cref="Bf16MatrixVector"/>, one float32 row to
    /// <see cref="Float32SingleRow"/>, 5–8 float32 rows (a batch's step) to <see cref="Float32FewRows"/>, and quantized
    /// layers' products to <see cref="QuantizedMatrixRows"/>.</summary>
    public static Tensor Apply(this Linear layer, Tensor input) => QuantizedLinear.TryGet(layer, out var quantized)
        ? QuantizedLinear.Product(input, quantized, layer.bias)
        : Product(input, layer.weight!, layer.bias);

    /// <summary>Several layers' products of one input (an attention's q, k and v projections; a gated MLP's two inputs), each
    /// what <see cref="Apply"/> gives it: when every layer is quantized alike and the kernel takes them, all in one pass of
    /// <see cref="QuantizedMatrixRows"/> (one fork and join, the input rounded once), else each on its own.</summary>
    public static Tensor[] ApplyEach(Tensor input, params Linear[] layers)
    {
        var quantized = new List<(QuantizedLinear.Weights, Tensor?)>(layers.Length);
        foreach (var layer in layers)
            if (QuantizedLinear.TryGet(layer, out var q)) quantized.Add((q, layer.bias));
        if (layers.Length > 1 && quantized.Count == layers.Length && QuantizedMatrixRows.TryLinearEach(input, quantized, out var products)) return products;
        return layers.Select(l => l.Apply(input)).ToArray();
    }

    /// <summary><c>nn.functional.linear(input, weight, bias)</c> through the same routing as <see cref="Apply"/>, for heads
    /// that hold their weight as a parameter rather than a <c>Linear</c> (IDEFICS' decoupled head).</summary>
    public static Tensor Product(Tensor input, Tensor weight, Tensor? bias)
    {
        if (!_libtorchOnly && (Bf16MatrixVector.TryLinear(input, weight, bias, out var product) || Float32SingleRow.TryLinear(input, weight, bias, out product)
                               || Float32FewRows.TryLinear(input, weight, bias, out product)))
            return product;
        return nn.functional.linear(input, weight, bias);
    }

    /// <summary>The operands both kernels accept: autograd off; input (…, K), weight (N, K) and bias (N) or null, all
    /// <paramref name="dtype"/>, on the CPU and contiguous. <paramref name="rows"/>: the input's rows.</summary>
    internal static bool KernelOperands(Tensor input, Tensor weight, Tensor? bias, ScalarType dtype, out long rows)
    {
        rows = 0;
        bool Fits(Tensor t) => t.dtype == dtype && t.device_type == DeviceType.CPU && t.is_contiguous();
        if (is_grad_enabled() || !Fits(input) || !Fits(weight) || weight.dim() != 2 || input.dim() < 1
            || input.size(-1) != weight.size(1) || weight.size(1) == 0) return false;
        if (bias is not null && !(Fits(bias) && bias.dim() == 1 && bias.size(0) == weight.size(0))) return false;
        rows = input.numel() / weight.size(1);
        return true;
    }

    /// <summary>A kernel's result: <paramref name="input"/>'s shape with its last dimension replaced by
    /// <paramref name="n"/>.</summary>
    internal static Tensor KernelOutput(Tensor input, long n, ScalarType dtype)
    {
        var shape = Shape.Of(input);
        shape[^1] = n;
        return empty(shape, dtype);
    }

    /// <summary>Sends this thread's <see cref="Apply"/> calls to libtorch until disposed (tests compare both paths).</summary>
    internal static IDisposable LibtorchOnlyOnThisThread()
    {
        bool before = _libtorchOnly;
        _libtorchOnly = true;
        return Ownership.Undo(() => _libtorchOnly = before);
    }
}
