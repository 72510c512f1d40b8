
namespace Multimodal.Generation;

/// <summary>The key/value cache of a decoder's self-attention, one (B, H, T, d) pair per layer, passed
/// explicitly to the model's forward (like transformers' <c>DynamicCache</c>); models hold no cache state.</summary>
/// <remarks>The cache owns its tensors: they live outside every dispose scope until they are replaced,
/// reordered or the cache is disposed.</remarks>
public sealed class KvCache : IDisposable
{
    private readonly Tensor?[] _keys;
    private readonly Tensor?[] _values;
    private bool _disposed;

    /// <summary>Creates an empty cache for <paramref name="layers"/> layers.</summary>
    public KvCache(int layers)
    {
        _keys = new Tensor?[layers];
        _values = new Tensor?[layers];
    }

    /// <summary>Number of layers.</summary>
    public int Layers => _keys.Length;

    /// <summary>Positions already cached (of layer 0, which a forward updates first).</summary>
    public long SequenceLength => _keys[0]?.shape[2] ?? 0;

    /// <summary>Appends new (B, H, Tnew, d) keys and values to a layer and returns the whole (B, H, T, d)
    /// pair, which the cache owns (do not dispose it).</summary>
    public (Tensor Keys, Tensor Values) Update(int layer, Tensor keys, Tensor values)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        _keys[layer] = Append(_keys[layer], keys);
        _values[layer] = Append(_values[layer], values);
        return (_keys[layer]!, _values[layer]!);
    }

    private static Tensor Append(Tensor? cached, Tensor fresh)
    {
        var result = cached is null ? fresh.alias() : cat([cached, fresh], 2);
        result.DetachFromDisposeScope();
        cached?.Dispose();
        return result;
    }

    /// <summary>Selects batch rows (beam search: the beams each surviving hypothesis came from).</summary>
    /// <param name="rows">(B') int64 indices into the current batch.</param>
    public void Reorder(Tensor rows)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        for (int i = 0; i < _keys.Length; i++)
        {
            _keys[i] = Select(_keys[i], rows);
            _values[i] = Select(_values[i], rows);
        }
    }

    private static Tensor? Select(Tensor? cached, Tensor rows)
    {
        if (cached is null) return null;
        var result = cached.index_select(0, rows.to(cached.device));
        result.DetachFromDisposeScope();
        cached.Dispose();
        return result;
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        for (int i = 0; i < _keys.Length; i++)
        {
            _keys[i]?.Dispose();
            _values[i]?.Dispose();
            _keys[i] = _values[i] = null;
        }
    }
}
