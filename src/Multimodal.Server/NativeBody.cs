using System.Buffers;
using System.Runtime.InteropServices;

namespace Multimodal.Server;

/// <summary>A request body held in native memory for the length of the request and freed when it ends: a body of
/// megabytes never becomes managed garbage that the heap keeps after the request (large native blocks go straight back
/// to the system when freed). The JSON document reads it in place.</summary>
internal sealed class NativeBody : MemoryManager<byte>
{
    private unsafe byte* _pointer;
    private int _length;
    private readonly int _capacity;

    private unsafe NativeBody(int capacity)
    {
        _capacity = capacity;
        _pointer = (byte*)NativeMemory.Alloc((nuint)Math.Max(capacity, 1));
    }

    /// <summary>Reads a body of at most <paramref name="limit"/> bytes (<paramref name="declared"/> when the request
    /// says its length).</summary>
    /// <exception cref="OpenAiException">413: the body is longer than <paramref name="limit"/>.</exception>
    public static async Task<NativeBody> ReadAsync(Stream body, long? declared, long limit, CancellationToken cancellationToken)
    {
        // One byte past the limit tells a body that is too long from one that fills it exactly.
        var buffer = new NativeBody((int)Math.Min(declared ?? limit + 1, limit + 1));
        try
        {
            while (buffer._length < buffer._capacity)
            {
                int read = await body.ReadAsync(buffer.Memory[buffer._length..buffer._capacity], cancellationToken);
                if (read == 0) break;
                buffer._length += read;
            }
            if (buffer._length > limit || (declared is null && buffer._length == buffer._capacity))
                throw OpenAiException.BodyTooLarge();
            return buffer;
        }
        catch
        {
            ((IDisposable)buffer).Dispose();
            throw;
        }
    }

    /// <summary>The bytes read.</summary>
    public ReadOnlyMemory<byte> Bytes => Memory[.._length];

    public override unsafe Span<byte> GetSpan() => _pointer == null ? [] : new Span<byte>(_pointer, _capacity);

    public override unsafe MemoryHandle Pin(int elementIndex = 0) => new(_pointer + elementIndex);

    public override void Unpin()
    {
    }

    protected override unsafe void Dispose(bool disposing)
    {
        if (_pointer == null) return;
        NativeMemory.Free(_pointer);
        _pointer = null;
    }
}
