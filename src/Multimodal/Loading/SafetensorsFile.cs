using Microsoft.Win32.SafeHandles;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;

namespace Multimodal.Loading;

/// <summary>One tensor entry of a safetensors header.</summary>
/// <param name="Name">tensor name as published.</param>
/// <param name="DType">safetensors dtype name (F32, BF16, ...).</param>
/// <param name="Shape">dimensions.</param>
/// <param name="Begin">start offset in the data section.</param>
/// <param name="End">end offset (exclusive) in the data section.</param>
public sealed record SafetensorsEntry(string Name, string DType, long[] Shape, long Begin, long End)
{
    /// <summary>Number of elements.</summary>
    public long ElementCount => Shape.Aggregate(1L, (a, b) => a * b);

    /// <summary>Size of the data in bytes.</summary>
    public long ByteLength => End - Begin;
}

/// <summary>A reader of the safetensors format (an 8-byte little-endian header length,
/// a JSON header, then raw little-endian data).</summary>
/// <remarks>
/// The header is validated completely when the file is opened (size bound, JSON, dtype names,
/// shape × dtype size = byte span, offsets inside the data section, no overlaps); every problem is
/// listed in one <see cref="CheckpointFormatException"/>. A CPU destination of the stored dtype can take the
/// stored bytes in place (<see cref="TryMapInto"/>, a private copy-on-write mapping, as llama.cpp and safetensors'
/// <c>safe_open</c> do); anything else is read with positioned reads a chunk at a time straight into the destination
/// (a file truncated underneath is then an exception). A tensor may exceed 2 GiB.
/// </remarks>
public sealed class SafetensorsFile : IDisposable
{
    /// <summary>Largest header accepted (the bound the reference implementation uses).</summary>
    public const long MaxHeaderBytes = 100_000_000;

    private readonly SafeFileHandle? _file;
    private readonly long _dataStart;
    private readonly long _fileLength;
    private readonly Dictionary<ScalarType, Tensor> _mappings = [];

    /// <summary>Path of the file.</summary>
    public string Path { get; }

    /// <summary>Entries by name, in header order.</summary>
    public IReadOnlyDictionary<string, SafetensorsEntry> Entries { get; }

    /// <summary>The optional <c>__metadata__</c> string map.</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; }

    private SafetensorsFile(string path, SafeFileHandle? file, long dataStart, long fileLength,
        IReadOnlyDictionary<string, SafetensorsEntry> entries, IReadOnlyDictionary<string, string> metadata)
    {
        Path = path;
        _file = file;
        _dataStart = dataStart;
        _fileLength = fileLength;
        Entries = entries;
        Metadata = metadata;
    }

    /// <summary>Opens and validates a safetensors file.</summary>
    /// <exception cref="FileNotFoundException">the file does not exist.</exception>
    /// <exception cref="CheckpointFormatException">the header is malformed; the message lists every problem.</exception>
    public static SafetensorsFile Open(string path)
    {
        path = System.IO.Path.GetFullPath(path);
        if (!CheckpointFiles.EntryExists(path)) throw new FileNotFoundException($"Safetensors file '{path}' does not exist.", path);
        CheckpointFiles.RequireRegularFile(path, minimumBytes: 1);
        long fileLength;
        byte[] header;
        using (var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read))
        {
            // The open file's length, not FileInfo's: a hub cache snapshot entry is a symbolic link, whose own
            // length is that of the link text.
            fileLength = stream.Length;
            if (fileLength < 8)
                throw new CheckpointFormatException(path, $"the file is {fileLength} bytes, shorter than the 8-byte header length.");
            Span<byte> lengthBytes = stackalloc byte[8];
            stream.ReadExactly(lengthBytes);
            ulong headerLength = BitConverter.ToUInt64(lengthBytes);
            if (!BitConverter.IsLittleEndian) headerLength = System.Buffers.Binary.BinaryPrimitives.ReverseEndianness(headerLength);
            if (headerLength > MaxHeaderBytes)
                throw new CheckpointFormatException(path, $"the header length {headerLength} exceeds the {MaxHeaderBytes}-byte limit (not a safetensors file, or corrupt).");
            if ((long)headerLength > fileLength - 8)
                throw new CheckpointFormatException(path, $"the header length {headerLength} goes beyond the end of the {fileLength}-byte file (truncated?).");
            header = new byte[headerLength];
            stream.ReadExactly(header);
        }
        long dataStart = 8 + header.Length;
        long dataLength = fileLength - dataStart;
        var (entries, metadata) = ParseHeader(path, header, dataLength);
        var file = dataLength > 0 ? File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.Read, FileOptions.SequentialScan) : null;
        return new SafetensorsFile(path, file, dataStart, fileLength, entries, metadata);
    }

    private static (Dictionary<string, SafetensorsEntry>, Dictionary<string, string>) ParseHeader(
        string path, byte[] header, long dataLength)
    {
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(new UTF8Encoding(false, true).GetString(header));
        }
        catch (Exception e) when (e is JsonException or DecoderFallbackException)
        {
            throw new CheckpointFormatException(path, $"the header is not valid UTF-8 JSON: {e.Message}");
        }
        using (doc)
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object)
                throw new CheckpointFormatException(path, "the header is not a JSON object.");
            var problems = new List<string>();
            var entries = new Dictionary<string, SafetensorsEntry>(StringComparer.Ordinal);
            var metadata = new Dictionary<string, string>();
            foreach (var property in doc.RootElement.EnumerateObject())
            {
                if (property.Name == "__metadata__")
                {
                    if (property.Value.ValueKind != JsonValueKind.Object)
                        problems.Add("__metadata__ is not an object of strings");
                    else
                        foreach (var m in property.Value.EnumerateObject())
                            metadata[m.Name] = m.Value.ValueKind == JsonValueKind.String ? m.Value.GetString()! : m.Value.GetRawText();
                    continue;
                }
                var entry = ParseEntry(property, dataLength, problems);
                if (entry is null) continue;
                if (!entries.TryAdd(entry.Name, entry)) problems.Add($"{entry.Name}: listed twice");
            }
            // As the format's own validation requires: sorted by offset, the tensors tile the data section
            // exactly — no overlap, no gap before, between or after them.
            long covered = 0, lastBegin = 0;
            string? last = null;
            foreach (var e in entries.Values.OrderBy(e => e.Begin).ThenBy(e => e.End))
            {
                if (e.Begin < covered)
                    problems.Add($"{e.Name}: bytes [{e.Begin}, {e.End}) overlap {last} [{lastBegin}, {covered})");
                else if (e.Begin > covered)
                    problems.Add($"{e.Name}: begins at byte {e.Begin} of the data section, but " +
                                 (last is null ? "no tensor covers the bytes before it" : $"{last} ends at {covered}: {e.Begin - covered} bytes belong to no tensor"));
                if (e.End >= covered)
                {
                    covered = e.End;
                    lastBegin = e.Begin;
                    last = e.Name;
                }
            }
            if (problems.Count == 0 && covered != dataLength)
                problems.Add($"the data section is {dataLength} bytes but the tensors cover {covered}: {dataLength - covered} trailing bytes belong to no tensor");
            if (problems.Count > 0) throw new CheckpointFormatException(path, problems);
            return (entries, metadata);
        }
    }

    private static SafetensorsEntry? ParseEntry(JsonProperty property, long dataLength, List<string> problems)
    {
        string name = property.Name;
        var value = property.Value;
        if (value.ValueKind != JsonValueKind.Object
            || !value.TryGetProperty("dtype", out var dtypeElement) || dtypeElement.ValueKind != JsonValueKind.String
            || !value.TryGetProperty("shape", out var shapeElement) || shapeElement.ValueKind != JsonValueKind.Array
            || !value.TryGetProperty("data_offsets", out var offsetsElement) || offsetsElement.ValueKind != JsonValueKind.Array
            || offsetsElement.GetArrayLength() != 2)
        {
            problems.Add($"{name}: expected {{\"dtype\": string, \"shape\": [ints], \"data_offsets\": [begin, end]}}");
            return null;
        }
        string dtype = dtypeElement.GetString()!;
        if (!SafetensorsDType.IsKnown(dtype))
        {
            problems.Add($"{name}: unknown dtype \"{dtype}\" (expected one of {string.Join(", ", SafetensorsDType.Names)})");
            return null;
        }
        var shape = new List<long>();
        foreach (var d in shapeElement.EnumerateArray())
        {
            if (d.ValueKind != JsonValueKind.Number || !d.TryGetInt64(out long n) || n < 0)
            {
                problems.Add($"{name}: shape {shapeElement.GetRawText()} has a dimension that is not a non-negative integer");
                return null;
            }
            shape.Add(n);
        }
        var offsets = offsetsElement.EnumerateArray().ToArray();
        if (offsets.Any(o => o.ValueKind != JsonValueKind.Number))
        {
            problems.Add($"{name}: data_offsets {offsetsElement.GetRawText()} must be two integers");
            return null;
        }
        if (!offsets[0].TryGetInt64(out long begin) || !offsets[1].TryGetInt64(out long end) || begin < 0 || end < begin)
        {
            problems.Add($"{name}: data_offsets {offsetsElement.GetRawText()} are not 0 <= begin <= end");
            return null;
        }
        var entry = new SafetensorsEntry(name, dtype, shape.ToArray(), begin, end);
        long expectedBytes;
        try { expectedBytes = checked(entry.ElementCount * SafetensorsDType.SizeOf(dtype)); }
        catch (OverflowException) { expectedBytes = -1; }
        if (expectedBytes != entry.ByteLength)
            problems.Add($"{name}: shape {Common.Shape.Format(entry.Shape)} x {dtype} needs {expectedBytes} bytes but data_offsets span {entry.ByteLength}");
        if (end > dataLength)
            problems.Add($"{name}: data_offsets [{begin}, {end}) go beyond the {dataLength}-byte data section (truncated file?)");
        return entry;
    }

    /// <summary>Bytes read by one system call (and, when converting, staged) at a time: bounds the memory a load
    /// needs beyond the model itself, whatever the size of the largest tensor.</summary>
    public const long ChunkBytes = 16L << 20;

    /// <summary>Reads a tensor into a new CPU tensor of its stored dtype.</summary>
    public Tensor Read(string name)
    {
        var entry = GetEntry(name);
        var result = empty(entry.Shape, TorchType(entry));
        try
        {
            CopyTo(entry, result);
            return result;
        }
        catch
        {
            result.Dispose();
            throw;
        }
    }

    /// <summary>Copies a tensor into <paramref name="destination"/>, a contiguous tensor with the same
    /// number of elements on any device and of any dtype (values are converted as <c>copy_</c> does).
    /// The file is read <see cref="ChunkBytes"/> at a time with positioned reads: a CPU destination of the
    /// stored dtype receives the bytes straight from the page cache (one copy, no mapping), any other through
    /// a chunk-sized staging tensor.</summary>
    /// <exception cref="CheckpointFormatException">the file became shorter than its header says.</exception>
    public void CopyTo(SafetensorsEntry entry, Tensor destination)
    {
        var storedType = TorchType(entry);
        if (!destination.is_contiguous() || destination.numel() != entry.ElementCount)
            throw new ArgumentException($"destination for {entry.Name} must be a contiguous tensor of {entry.ElementCount} elements.");
        if (entry.ElementCount == 0) return;
        using var scope = NewDisposeScope();
        bool direct = destination.device_type == DeviceType.CPU && destination.dtype == storedType;
        long elementSize = SafetensorsDType.SizeOf(entry.DType);
        long chunkElements = Math.Max(1, ChunkBytes / elementSize);
        var flat = destination.view(-1);
        var staging = direct ? null : empty(Math.Min(chunkElements, entry.ElementCount), storedType);
        for (long start = 0; start < entry.ElementCount; start += chunkElements)
        {
            long count = Math.Min(chunkElements, entry.ElementCount - start);
            var target = direct ? flat.narrow(0, start, count) : staging!.narrow(0, 0, count);
            var span = target.bytes;
            long position = _dataStart + entry.Begin + start * elementSize;
            for (int done = 0; done < span.Length;)
            {
                int read = RandomAccess.Read(_file!, span[done..], position + done);
                if (read == 0)
                    throw new CheckpointFormatException(Path, $"tensor {entry.Name} ends at byte {_dataStart + entry.End}, beyond the end of the file (was it truncated while loading?).");
                done += read;
            }
            if (!direct) flat.narrow(0, start, count).copy_(target);
        }
    }

    /// <summary>Environment variable that turns <see cref="TryMapInto"/> off when set to 0: every tensor is then
    /// copied into memory of its own (for checkpoints that may be overwritten in place while loaded).</summary>
    public const string MappingVariable = "MULTIMODAL_MMAP";

    /// <summary>Makes <paramref name="destination"/> use the stored bytes where they lie: its storage becomes a view of a
    /// private (copy-on-write) mapping of the file, so loading neither allocates nor copies, the page cache is shared
    /// with every process that maps the file, and writes to the tensor never reach the file. The tensor's pages are
    /// read in now (Linux: <c>MADV_POPULATE_READ</c>), so the cost of a cold disk is paid by the load, not the first
    /// forward. Applies to a CPU destination of the stored dtype whose data is aligned to its element size in the file
    /// (safetensors pads its header for this), unless <see cref="MappingVariable"/> is 0.</summary>
    /// <returns>false when mapping does not apply; the caller copies instead.</returns>
    /// <remarks>A mapped file must not be truncated in place while the model lives (<c>cp</c> over it does): its
    /// pages would vanish under the model. Replace checkpoints by rename, as the Hugging Face cache does.</remarks>
    public bool TryMapInto(SafetensorsEntry entry, Tensor destination)
    {
        var storedType = TorchType(entry);
        long elementSize = SafetensorsDType.SizeOf(entry.DType);
        long offset = _dataStart + entry.Begin;
        if (destination.device_type != DeviceType.CPU || destination.dtype != storedType || entry.ElementCount == 0
            || offset % elementSize != 0 || !destination.shape.SequenceEqual(entry.Shape)
            || Environment.GetEnvironmentVariable(MappingVariable) == "0")
            return false;
        if (!_mappings.TryGetValue(storedType, out var whole))
        {
            try
            {
                // The whole file as elements of this dtype: from_file maps from byte 0, so a tensor's element offset is
                // its byte offset / element size (hence the alignment condition).
                whole = from_file(Path, shared: false, size: _fileLength / elementSize, dtype: storedType);
            }
            catch (Exception e) when (e is ExternalException or ArgumentException)
            {
                return false;   // a file system that cannot map: copy instead
            }
            whole.DetachFromDisposeScope();
            _mappings[storedType] = whole;
        }
        using (var flat = whole.narrow(0, offset / elementSize, entry.ElementCount))
        {
            Prefetch(flat);
            using var shaped = flat.view(entry.Shape);
            destination.set_(shaped);   // returns destination itself
        }
        return true;
    }

    [DllImport("libc", SetLastError = true)]
    private static extern int madvise(nint address, nuint length, int advice);

    private const int MadvPopulateRead = 22;     // Linux 5.14+

    // Faults the mapping's pages in, a chunk at a time (a Span is at most 2 GiB); without MADV_POPULATE_READ (an older
    // kernel, another OS) by reading one byte per page.
    private static unsafe void Prefetch(Tensor flat)
    {
        long chunkElements = Math.Max(1, (1L << 30) / flat.ElementSize);
        for (long start = 0; start < flat.numel(); start += chunkElements)
        {
            using var chunk = flat.narrow(0, start, Math.Min(chunkElements, flat.numel() - start));
            var bytes = chunk.bytes;
            fixed (byte* first = bytes)
            {
                long page = Environment.SystemPageSize;
                long begin = (long)first & ~(page - 1);
                if (OperatingSystem.IsLinux() && madvise((nint)begin, (nuint)((long)first + bytes.Length - begin), MadvPopulateRead) == 0)
                    continue;
                byte sum = 0;
                for (long i = 0; i < bytes.Length; i += page) sum ^= first[i];
                GC.KeepAlive(sum);
            }
        }
    }

    private ScalarType TorchType(SafetensorsEntry entry) =>
        SafetensorsDType.ToTorch(entry.DType)
        ?? throw new NotSupportedException($"{Path}: tensor {entry.Name} has dtype {entry.DType}, which TorchSharp cannot hold.");

    private SafetensorsEntry GetEntry(string name) =>
        Entries.TryGetValue(name, out var entry)
            ? entry
            : throw new KeyNotFoundException($"{Path} has no tensor named '{name}'.");

    /// <inheritdoc/>
    public void Dispose()
    {
        // The mappings live on in the tensors that view them; this only drops the file's own reference.
        foreach (var mapping in _mappings.Values) mapping.Dispose();
        _mappings.Clear();
        _file?.Dispose();
    }
}
