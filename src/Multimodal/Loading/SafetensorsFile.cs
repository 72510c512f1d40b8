using System.IO.MemoryMappedFiles;
using System.Text;
using System.Text.Json;
using TorchSharp;
using static TorchSharp.torch;

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

/// <summary>A memory-mapped reader of the safetensors format (an 8-byte little-endian header length,
/// a JSON header, then raw little-endian data).</summary>
/// <remarks>
/// The header is validated completely when the file is opened (size bound, JSON, dtype names,
/// shape × dtype size = byte span, offsets inside the data section, no overlaps); every problem is
/// listed in one <see cref="CheckpointFormatException"/>. Tensor data is mapped per tensor and unmapped
/// after the copy, so reading a checkpoint keeps at most one tensor's pages resident, and a tensor may
/// exceed 2 GiB.
/// </remarks>
public sealed class SafetensorsFile : IDisposable
{
    /// <summary>Largest header accepted (the bound the reference implementation uses).</summary>
    public const long MaxHeaderBytes = 100_000_000;

    private readonly MemoryMappedFile? _map;
    private readonly long _dataStart;

    /// <summary>Path of the file.</summary>
    public string Path { get; }

    /// <summary>Entries by name, in header order.</summary>
    public IReadOnlyDictionary<string, SafetensorsEntry> Entries { get; }

    /// <summary>The optional <c>__metadata__</c> string map.</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; }

    private SafetensorsFile(string path, MemoryMappedFile? map, long dataStart,
        IReadOnlyDictionary<string, SafetensorsEntry> entries, IReadOnlyDictionary<string, string> metadata)
    {
        Path = path;
        _map = map;
        _dataStart = dataStart;
        Entries = entries;
        Metadata = metadata;
    }

    /// <summary>Opens and validates a safetensors file.</summary>
    /// <exception cref="FileNotFoundException">the file does not exist.</exception>
    /// <exception cref="CheckpointFormatException">the header is malformed; the message lists every problem.</exception>
    public static SafetensorsFile Open(string path)
    {
        path = System.IO.Path.GetFullPath(path);
        if (!File.Exists(path)) throw new FileNotFoundException($"Safetensors file '{path}' does not exist.", path);
        long fileLength = new FileInfo(path).Length;
        byte[] header;
        using (var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read))
        {
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
        var map = dataLength > 0
            ? MemoryMappedFile.CreateFromFile(path, FileMode.Open, null, 0, MemoryMappedFileAccess.Read)
            : null;
        return new SafetensorsFile(path, map, dataStart, entries, metadata);
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
            SafetensorsEntry? previous = null;
            foreach (var e in entries.Values.Where(e => e.ByteLength > 0).OrderBy(e => e.Begin))
            {
                if (previous is not null && e.Begin < previous.End)
                    problems.Add($"{e.Name}: bytes [{e.Begin}, {e.End}) overlap {previous.Name} [{previous.Begin}, {previous.End})");
                if (previous is null || e.End > previous.End) previous = e;
            }
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

    /// <summary>Reads a tensor into a new CPU tensor of its stored dtype.</summary>
    public Tensor Read(string name)
    {
        var entry = GetEntry(name);
        var dtype = SafetensorsDType.ToTorch(entry.DType)
            ?? throw new NotSupportedException($"{Path}: tensor {name} has dtype {entry.DType}, which TorchSharp cannot hold.");
        var result = empty(entry.Shape, dtype);
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

    /// <summary>Copies a tensor's bytes into <paramref name="destination"/>, a contiguous CPU tensor of
    /// the stored dtype and element count.</summary>
    public unsafe void CopyTo(SafetensorsEntry entry, Tensor destination)
    {
        if (destination.device_type != DeviceType.CPU || !destination.is_contiguous()
            || destination.numel() != entry.ElementCount
            || destination.ElementSize != SafetensorsDType.SizeOf(entry.DType))
            throw new ArgumentException($"destination for {entry.Name} must be a contiguous CPU tensor of {entry.ElementCount} {entry.DType} elements.");
        if (entry.ByteLength == 0) return;
        using var accessor = _map!.CreateViewAccessor(_dataStart + entry.Begin, entry.ByteLength, MemoryMappedFileAccess.Read);
        byte* basePtr = null;
        accessor.SafeMemoryMappedViewHandle.AcquirePointer(ref basePtr);
        try
        {
            byte* source = basePtr + accessor.PointerOffset;
            using var flat = destination.view(-1);
            // Tensor.bytes is a Span, so at most 2 GiB per call: copy in chunks of whole elements.
            long elementSize = destination.ElementSize;
            long chunkElements = (1L << 30) / elementSize;
            for (long start = 0; start < entry.ElementCount; start += chunkElements)
            {
                long count = Math.Min(chunkElements, entry.ElementCount - start);
                using var chunk = flat.narrow(0, start, count);
                new ReadOnlySpan<byte>(source + start * elementSize, checked((int)(count * elementSize))).CopyTo(chunk.bytes);
            }
        }
        finally
        {
            accessor.SafeMemoryMappedViewHandle.ReleasePointer();
        }
    }

    private SafetensorsEntry GetEntry(string name) =>
        Entries.TryGetValue(name, out var entry)
            ? entry
            : throw new KeyNotFoundException($"{Path} has no tensor named '{name}'.");

    /// <inheritdoc/>
    public void Dispose() => _map?.Dispose();
}
