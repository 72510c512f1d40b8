namespace Multimodal.Common;

/// <summary>An embedding table, PyTorch's <c>nn.Embedding</c> for inference: rows looked up by id. Built
/// uninitialised, because TorchSharp's <c>nn.Embedding(n, d, device: META)</c> still materialises and
/// initialises an n×d table in CPU memory (measured: 151 MB for OPT's 50272×768 table), which defeats the
/// meta-device check before a load and wastes time on a real load that overwrites every row anyway.</summary>
/// <remarks>The key of the table is <c>weight</c>, as upstream's. <c>padding_idx</c> only shapes gradients
/// upstream; lookups are the same without it.</remarks>
internal sealed class EmbeddingTable : nn.Module<Tensor, Tensor>
{
    [ComponentName(Name = "weight")] private Parameter _weight;

    /// <summary>A table of <paramref name="count"/> rows of <paramref name="dim"/>, uninitialised, allocated once
    /// on <paramref name="device"/> in <paramref name="dtype"/>.</summary>
    public EmbeddingTable(long count, long dim, Device? device = null, ScalarType? dtype = null) : base("Embedding")
    {
        _weight = new Parameter(empty(count, dim, dtype: dtype ?? ScalarType.Float32, device: device), requires_grad: false);
        RegisterComponents();
    }

    /// <summary>The (rows, dim) table.</summary>
    public Parameter weight
    {
        get => _weight;
        set
        {
            _weight = value;
            register_parameter("weight", value);
        }
    }

    /// <summary>(…) ids → (…, dim) rows.</summary>
    public override Tensor forward(Tensor ids)
    {
        using var scope = NewDisposeScope();
        long[] shape = [.. Shape.Of(ids), _weight.size(1)];
        return _weight.index_select(0, ids.reshape(-1)).view(shape).MoveToOuterDisposeScope();
    }
}
