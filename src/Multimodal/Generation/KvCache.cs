using Multimodal.Common;

namespace Multimodal.Generation;

/// <summary>The key/value cache of a decoder's self-attention, one (B, H, T, d) pair per layer, passed
/// explicitly to the model's forward (like transformers' <c>DynamicCache</c>); models hold no cache state.</summary>
/// <remarks>Each layer's keys and values live in a (B, H, capacity, d) storage that a step writes its new positions into;
/// <see cref="Update"/> returns views of the filled part, which attention reads in place. Concatenating instead copied the
/// whole cache at every step (in the 1.07 B decode, ~45 µs of each layer's step). The capacity grows to twice itself, or to
/// what is needed rounded up to <see cref="Reserve"/> positions, so a step copies the cache only when it outgrows it and
/// the storage holds at most twice the positions cached (or <see cref="Reserve"/> more). The cache owns its storage: it
/// lives outside every dispose scope until it is replaced, reordered or the cache is disposed.</remarks>
public sealed class KvCache : IDisposable
{
    /// <summary>Positions a layer's storage is rounded up to when it grows.</summary>
    public const int Reserve = 64;

    private readonly Tensor?[] _keys;
    private readonly Tensor?[] _values;
    private readonly long[] _lengths;
    private bool _disposed;

    /// <summary>Creates an empty cache for <paramref name="layers"/> layers.</summary>
    public KvCache(int layers)
    {
        _keys = new Tensor?[layers];
        _values = new Tensor?[layers];
        _lengths = new long[layers];
    }

    /// <summary>Number of layers.</summary>
    public int Layers => _keys.Length;

    /// <summary>Positions already cached (of layer 0, which a forward updates first).</summary>
    public long SequenceLength => _lengths[0];

    /// <summary>Positions already cached in <paramref name="layer"/> (during a forward, layers before it hold one step
    /// more).</summary>
    public long LengthOf(int layer) => _lengths[layer];

    /// <summary>Appends new (B, H, Tnew, d) keys and values to a layer and returns the whole (B, H, T, d)
    /// pair: views of the cache's storage, valid until the next update of this layer (dispose them with the caller's
    /// scope; the storage stays the cache's).</summary>
    public (Tensor Keys, Tensor Values) Update(int layer, Tensor keys, Tensor values)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        long length = _lengths[layer], fresh = keys.size(2), total = checked(length + fresh);
        _keys[layer] = Append(_keys[layer], keys, length, total);
        _values[layer] = Append(_values[layer], values, length, total);
        _lengths[layer] = total;
        return (_keys[layer]!.narrow(2, 0, total), _values[layer]!.narrow(2, 0, total));
    }

    /// <summary>Appends one position per batch row, keys and values as a projection gives them, (B, 1, H·d), and returns
    /// the layer's (B, H, capacity, d) storages, owned by the cache (do not dispose them), and how many positions they now
    /// hold: what <c>DecodeAttention.TryComputeRows</c> reads. On the CPU the rows are copied in place, without a view.</summary>
    public (Tensor Keys, Tensor Values, long Length) AppendRows(int layer, Tensor keys, Tensor values, int heads)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (keys.dim() != 3 || keys.size(1) != 1 || heads < 1 || keys.size(2) % heads != 0 || !Shape.Of(values).SequenceEqual(Shape.Of(keys)))
            throw new ArgumentException($"AppendRows takes (B, 1, H·d) keys and values for {heads} heads, not {Shape.Format(Shape.Of(keys))} and {Shape.Format(Shape.Of(values))}.");
        long length = _lengths[layer], total = checked(length + 1), d = keys.size(2) / heads;
        _keys[layer] = AppendRow(_keys[layer], keys, heads, d, length, total);
        _values[layer] = AppendRow(_values[layer], values, heads, d, length, total);
        _lengths[layer] = total;
        return (_keys[layer]!, _values[layer]!, total);
    }

    private static Tensor AppendRow(Tensor? storage, Tensor fresh, long heads, long d, long length, long total)
    {
        long b = fresh.size(0);
        storage = Reserved(storage, [b, heads, 0, d], fresh.dtype, fresh.device, length, total);
        if (storage.size(0) != b || storage.size(1) != heads || storage.size(3) != d)
            throw new ArgumentException($"The cache holds {Shape.Format(Shape.Of(storage))} (B, H, capacity, d); rows for batch {b}, {heads} heads of {d} do not fit it.");
        if (storage.device_type == DeviceType.CPU && fresh.device_type == DeviceType.CPU && fresh.is_contiguous() && fresh.dtype == storage.dtype
            && storage.numel() * storage.element_size() <= int.MaxValue)   // a span's length is an int
        {
            // Row (b, h) of the fresh (B, 1, H·d) starts at (b·H + h)·d; its place in the (B, H, capacity, d) storage at
            // ((b·H + h)·capacity + length)·d.
            long size = fresh.element_size(), capacity = storage.size(2);
            var source = fresh.bytes;
            var target = storage.bytes;
            int row = checked((int)(d * size));
            for (long bh = 0; bh < b * heads; bh++)
                source.Slice(checked((int)(bh * d * size)), row).CopyTo(target.Slice(checked((int)(((bh * capacity) + length) * d * size)), row));
        }
        else
        {
            using var split = fresh.view(b, 1, heads, d).transpose(1, 2);
            using var slot = storage.narrow(2, length, 1);
            slot.copy_(split);
        }
        return storage;
    }

    private static Tensor Append(Tensor? storage, Tensor fresh, long length, long total)
    {
        storage = Reserved(storage, Shape.Of(fresh), fresh.dtype, fresh.device, length, total);
        using var slot = storage.narrow(2, length, total - length);
        slot.copy_(fresh);
        return storage;
    }

    // The storage, grown when it holds fewer than `total` positions (the first `length` copied over), for (B, H, ·, d) rows
    // of `like`'s batch, heads and width.
    private static Tensor Reserved(Tensor? storage, long[] like, ScalarType dtype, Device device, long length, long total)
    {
        if (storage is not null && storage.size(2) >= total) return storage;
        long capacity = Math.Max(storage is null ? 0 : 2 * storage.size(2), (total + Reserve - 1) / Reserve * Reserve);
        var grown = empty([like[0], like[1], capacity, like[3]], dtype, device);
        grown.DetachFromDisposeScope();
        if (storage is not null)
        {
            using var filled = storage.narrow(2, 0, length);
            using var target = grown.narrow(2, 0, length);
            target.copy_(filled);
            storage.Dispose();
        }
        return grown;
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

    // The whole storage's rows, capacity kept: one copy (the unfilled positions past the length go along, unread).
    private static Tensor? Select(Tensor? storage, Tensor rows)
    {
        if (storage is null) return null;
        using var scope = NewDisposeScope();
        var result = storage.index_select(0, rows.to(storage.device));
        result.DetachFromDisposeScope();
        storage.Dispose();
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
