namespace Multimodal.Loading;

/// <summary>A source whose one named matrix gains rows, each the mean of its stored rows: what a port has to supply where
/// a checkpoint's vocabulary grew after the file was written (OpenFlamingo resizes LLaMA-7B's 32,000 rows to 32,003 at
/// load time and trains the input embeddings, but its published adapter does not carry the output head, so upstream's new
/// head rows are random draws made at every load). The mean row is the expectation of transformers' own mean-resizing
/// (≥ 4.46), and gives the new tokens no preference over the rest.</summary>
internal sealed class GrownRowsSource : ITensorSource
{
    private readonly ITensorSource _inner;
    private readonly string _name;
    private readonly long _stored;

    /// <param name="inner">the source (owned: disposed with this one).</param>
    /// <param name="name">the matrix that grows.</param>
    /// <param name="rows">its rows after growing; at least the stored rows.</param>
    public GrownRowsSource(ITensorSource inner, string name, long rows)
    {
        var info = inner.Tensors[name];
        if (info.Shape.Length != 2 || rows < info.Shape[0])
            throw new ArgumentException($"{name} {Common.Shape.Format(info.Shape)} cannot grow to {rows} rows.", nameof(rows));
        _inner = inner;
        _name = name;
        _stored = info.Shape[0];
        var tensors = new Dictionary<string, TensorInfo>(inner.Tensors, StringComparer.Ordinal)
        {
            [name] = info with { Shape = [rows, info.Shape[1]], Origin = $"{info.Origin}, {rows - _stored} rows added (the mean row)" },
        };
        Tensors = tensors;
    }

    /// <summary>Rows the source adds.</summary>
    public long Added => Tensors[_name].Shape[0] - _stored;

    /// <inheritdoc/>
    public string Description => _inner.Description;

    /// <inheritdoc/>
    public IReadOnlyDictionary<string, TensorInfo> Tensors { get; }

    /// <inheritdoc/>
    public Tensor Read(string name)
    {
        if (name != _name) return _inner.Read(name);
        using var stored = _inner.Read(name);
        var grown = empty(Tensors[name].Shape, stored.dtype);
        Fill(stored, grown);
        return grown;
    }

    /// <inheritdoc/>
    public void CopyTo(string name, Tensor destination)
    {
        if (name != _name)
        {
            _inner.CopyTo(name, destination);
            return;
        }
        using var stored = _inner.Read(name);
        using var grown = empty(Tensors[name].Shape, stored.dtype);
        Fill(stored, grown);
        using (no_grad()) destination.view(grown.shape).copy_(grown);
    }

    /// <inheritdoc/>
    public bool TryMapInto(string name, Tensor destination) => name != _name && _inner.TryMapInto(name, destination);

    /// <inheritdoc/>
    public string? Expected(string key) => _inner.Expected(key);

    private void Fill(Tensor stored, Tensor grown)
    {
        using var scope = NewDisposeScope();
        grown.narrow(0, 0, _stored).copy_(stored);
        // The mean in float64, so a 32,000-row half-precision matrix averages without rounding drift.
        grown.narrow(0, _stored, grown.size(0) - _stored).copy_(stored.to(ScalarType.Float64).mean([0L], keepdim: true).to(stored.dtype).expand(grown.size(0) - _stored, -1));
    }

    /// <inheritdoc/>
    public void Dispose() => _inner.Dispose();
}
