using System.IO.Compression;
using System.Text;

namespace Multimodal.Loading;

/// <summary>Reads a PyTorch <c>torch.save</c> zip checkpoint (a state dict) WITHOUT executing anything:
/// the pickle is interpreted by a small machine that knows only the opcodes a state dict uses and
/// accepts only the globals a state dict needs (<c>collections.OrderedDict</c>,
/// <c>torch._utils._rebuild_tensor_v2</c> / <c>_rebuild_parameter</c> and the <c>torch.*Storage</c> types).
/// Any other global (<c>os.system</c>, <c>builtins.eval</c>, ...) is refused with a
/// <see cref="CheckpointFormatException"/> before it could be called — nothing is ever called.</summary>
public sealed class TorchCheckpointFile : ITensorSource
{
    private static readonly Dictionary<string, (string SafetensorsType, ScalarType Type)> Storages = new()
    {
        ["FloatStorage"] = ("F32", ScalarType.Float32),
        ["HalfStorage"] = ("F16", ScalarType.Float16),
        ["BFloat16Storage"] = ("BF16", ScalarType.BFloat16),
        ["DoubleStorage"] = ("F64", ScalarType.Float64),
        ["LongStorage"] = ("I64", ScalarType.Int64),
        ["IntStorage"] = ("I32", ScalarType.Int32),
        ["ShortStorage"] = ("I16", ScalarType.Int16),
        ["CharStorage"] = ("I8", ScalarType.Int8),
        ["ByteStorage"] = ("U8", ScalarType.Byte),
        ["BoolStorage"] = ("BOOL", ScalarType.Bool),
    };

    private sealed record StorageRef(string Kind, string Key, long Elements);
    private sealed record TensorRef(StorageRef Storage, long Offset, long[] Shape, long[] Stride);
    private sealed record Global(string Module, string Name);
    private sealed class Mark;

    private readonly ZipArchive _zip;
    private readonly string _prefix;
    private readonly Dictionary<string, TensorRef> _tensors;

    /// <inheritdoc/>
    public string Description { get; }

    /// <inheritdoc/>
    public IReadOnlyDictionary<string, TensorInfo> Tensors { get; }

    private TorchCheckpointFile(string path, ZipArchive zip, string prefix, Dictionary<string, TensorRef> tensors)
    {
        Description = path;
        _zip = zip;
        _prefix = prefix;
        _tensors = tensors;
        Tensors = tensors.ToDictionary(kv => kv.Key,
            kv => new TensorInfo(kv.Key, Storages[kv.Value.Storage.Kind].SafetensorsType, kv.Value.Shape, Path.GetFileName(path)));
    }

    /// <summary>Opens a checkpoint and interprets its pickle.</summary>
    /// <exception cref="CheckpointFormatException">not a torch zip checkpoint, truncated, or the pickle
    /// uses an opcode or global a state dict does not need.</exception>
    public static TorchCheckpointFile Open(string path)
    {
        path = Path.GetFullPath(path);
        if (!CheckpointFiles.EntryExists(path)) throw new FileNotFoundException($"Checkpoint '{path}' does not exist.", path);
        long fileLength = CheckpointFiles.RequireRegularFile(path, minimumBytes: 1).Length;
        ZipArchive zip;
        try
        {
            zip = ZipFile.OpenRead(path);
        }
        catch (InvalidDataException e)
        {
            throw new CheckpointFormatException(path, $"not a PyTorch zip checkpoint (legacy non-zip torch.save files are not supported), or truncated: {e.Message}");
        }
        try
        {
            return Interpret(path, zip, fileLength);
        }
        catch (Exception e) when (e is InvalidDataException or IOException or NotSupportedException)
        {
            zip.Dispose();
            throw new CheckpointFormatException(path, $"the zip structure is damaged: {e.Message}");
        }
        catch
        {
            zip.Dispose();
            throw;
        }
    }

    /// <summary>Largest pickle record read: a state dict's pickle holds names and shapes, a few MB at most.</summary>
    private const long MaxPickleBytes = 256L << 20;

    private static TorchCheckpointFile Interpret(string path, ZipArchive zip, long fileLength)
    {
        var pickle = zip.Entries.FirstOrDefault(e => e.FullName.EndsWith("/data.pkl", StringComparison.Ordinal) && e.FullName.Count(c => c == '/') == 1)
                     ?? throw new CheckpointFormatException(path, "the archive has no <name>/data.pkl record.");
        string prefix = pickle.FullName[..^"data.pkl".Length];
        if (pickle.Length > MaxPickleBytes)
            throw new CheckpointFormatException(path, $"the pickle record {pickle.FullName} declares {pickle.Length} bytes; a state dict's is far smaller (limit {MaxPickleBytes}).");
        byte[] bytes = new byte[pickle.Length];
        using (var stream = pickle.Open())
            stream.ReadExactly(bytes);
        var root = new Unpickler(bytes, path).Run();
        if (root is not Dictionary<object, object?> dict)
            throw new CheckpointFormatException(path, "the pickle does not hold a dict of tensors (a state dict).");
        var tensors = new Dictionary<string, TensorRef>(StringComparer.Ordinal);
        var problems = new List<string>();
        foreach (var (key, value) in dict)
        {
            if (key is not string name) { problems.Add($"a key is not a string ({key})"); continue; }
            if (value is not TensorRef t) { problems.Add($"{name}: not a tensor"); continue; }
            string record = prefix + "data/" + t.Storage.Key;
            var entry = zip.GetEntry(record);
            long needed = (t.Storage.Elements) * SafetensorsDType.SizeOf(Storages[t.Storage.Kind].SafetensorsType);
            if (entry is null) problems.Add($"{name}: storage record {record} is missing");
            else if (entry.Length != needed)
                problems.Add($"{name}: storage record {record} holds {entry.Length} bytes, but its storage is {needed} bytes (truncated or damaged?)");
            else if (entry.CompressedLength > fileLength)
                problems.Add($"{name}: storage record {record} declares {entry.CompressedLength} stored bytes in a {fileLength}-byte file (damaged sizes)");
            else if (ViewProblem(t) is string view) problems.Add($"{name}: {view}");
            else tensors[name] = t;
        }
        if (problems.Count > 0) throw new CheckpointFormatException(path, problems);
        return new TorchCheckpointFile(path, zip, prefix, tensors);
    }

    // The view (offset, shape, stride) must stay inside its storage: checked here so libtorch never sees one
    // that reaches past it.
    private static string? ViewProblem(TensorRef t)
    {
        if (t.Shape.Length != t.Stride.Length) return $"size {Common.Shape.Format(t.Shape)} and stride {Common.Shape.Format(t.Stride)} differ in rank";
        if (t.Offset < 0 || t.Shape.Any(d => d < 0) || t.Stride.Any(d => d < 0))
            return $"negative offset, size or stride (offset {t.Offset}, size {Common.Shape.Format(t.Shape)}, stride {Common.Shape.Format(t.Stride)})";
        if (t.Shape.Contains(0)) return null;
        try
        {
            long last = t.Offset;
            for (int i = 0; i < t.Shape.Length; i++) last = checked(last + (t.Shape[i] - 1) * t.Stride[i]);
            return last < t.Storage.Elements ? null
                : $"the view (offset {t.Offset}, size {Common.Shape.Format(t.Shape)}, stride {Common.Shape.Format(t.Stride)}) reaches element {last} of a {t.Storage.Elements}-element storage";
        }
        catch (OverflowException)
        {
            return $"the view (size {Common.Shape.Format(t.Shape)}, stride {Common.Shape.Format(t.Stride)}) overflows";
        }
    }

    private static bool IsContiguous(TensorRef t)
    {
        long expected = 1;
        for (int i = t.Shape.Length - 1; i >= 0; i--)
        {
            if (t.Shape[i] != 1 && t.Stride[i] != expected) return false;
            expected *= t.Shape[i];
        }
        return true;
    }

    /// <inheritdoc/>
    public Tensor Read(string name)
    {
        var t = _tensors.TryGetValue(name, out var found) ? found : throw new KeyNotFoundException($"{Description} has no tensor named '{name}'.");
        var type = Storages[t.Storage.Kind].Type;
        using var scope = NewDisposeScope();
        var storage = empty(t.Storage.Elements, type);
        var entry = _zip.GetEntry(_prefix + "data/" + t.Storage.Key)!;
        try
        {
            using var stream = entry.Open();
            long chunk = SafetensorsFile.ChunkBytes / storage.ElementSize;
            for (long start = 0; start < t.Storage.Elements; start += chunk)
            {
                using var part = storage.narrow(0, start, Math.Min(chunk, t.Storage.Elements - start));
                ReadInto(stream, part.bytes);
            }
        }
        catch (Exception e) when (e is InvalidDataException or IOException or EndOfStreamException)
        {
            throw new CheckpointFormatException(Description, $"{name}: its storage record cannot be read: {e.Message}");
        }
        return storage.as_strided(t.Shape, t.Stride, t.Offset).contiguous().MoveToOuterDisposeScope();
    }

    /// <inheritdoc/>
    /// <remarks>A contiguous view (every tensor torch.save writes from a state dict) streams from its storage
    /// record into the destination through one bounded staging buffer, converting dtype on the way; tensors
    /// sharing a storage each read only their own range. Other views are read whole and copied.</remarks>
    public void CopyTo(string name, Tensor destination)
    {
        var t = _tensors.TryGetValue(name, out var found) ? found : throw new KeyNotFoundException($"{Description} has no tensor named '{name}'.");
        using var noGrad = no_grad();
        if (!IsContiguous(t))
        {
            using var source = Read(name);
            destination.copy_(source.view(destination.shape));
            return;
        }
        var type = Storages[t.Storage.Kind].Type;
        long numel = t.Shape.Aggregate(1L, (a, b) => a * b);
        if (numel != destination.numel()) throw new ArgumentException($"{name}: {numel} elements for a destination of {destination.numel()}.");
        using var flat = destination.view(-1);
        using var staging = empty(Math.Max(1, Math.Min(numel, SafetensorsFile.ChunkBytes / Math.Max(1, destination.ElementSize))), type);
        long elementSize = staging.ElementSize;
        try
        {
            using var stream = _zip.GetEntry(_prefix + "data/" + t.Storage.Key)!.Open();
            Skip(stream, t.Offset * elementSize);
            for (long start = 0; start < numel; start += staging.size(0))
            {
                long count = Math.Min(staging.size(0), numel - start);
                using var part = staging.narrow(0, 0, count);
                ReadInto(stream, part.bytes);
                using var target = flat.narrow(0, start, count);
                target.copy_(part);
            }
        }
        catch (Exception e) when (e is InvalidDataException or IOException or EndOfStreamException)
        {
            throw new CheckpointFormatException(Description, $"{name}: its storage record cannot be read: {e.Message}");
        }
    }

    // In 1 MiB reads: a zip entry's stream reads a Span through a pooled array as large as the request, which a
    // 16 MiB read would keep alive in the pool beside the staging buffer.
    private static void ReadInto(Stream stream, Span<byte> destination)
    {
        const int Slice = 1 << 20;
        for (int offset = 0; offset < destination.Length; offset += Slice)
            stream.ReadExactly(destination.Slice(offset, Math.Min(Slice, destination.Length - offset)));
    }

    private static void Skip(Stream stream, long bytes)
    {
        var sink = new byte[Math.Min(bytes, 1L << 20)];
        while (bytes > 0)
        {
            int n = stream.Read(sink, 0, (int)Math.Min(sink.Length, bytes));
            if (n == 0) throw new EndOfStreamException("the storage record ends before the tensor's offset");
            bytes -= n;
        }
    }

    /// <inheritdoc/>
    public void Dispose() => _zip.Dispose();

    /// <summary>The pickle machine: a stack, a memo, and nothing that can call arbitrary code.</summary>
    private sealed class Unpickler(byte[] data, string path)
    {
        private static readonly HashSet<string> AllowedGlobals =
        [
            "collections.OrderedDict", "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_parameter",
            .. Storages.Keys.Select(k => "torch." + k),
        ];

        private readonly List<object?> _stack = [];
        private readonly Dictionary<long, object?> _memo = [];
        private int _pos;

        public object? Run()
        {
            while (true)
            {
                if (_pos >= data.Length) throw Fail("the pickle ends without STOP (truncated)");
                byte op = data[_pos++];
                switch (op)
                {
                    case 0x80: _pos++; break;                                   // PROTO
                    case 0x95: _pos += 8; break;                                // FRAME
                    case (byte)'.': return Pop();                               // STOP
                    case (byte)'c': Push(ReadGlobal(ReadLine(), ReadLine())); break;
                    case 0x93: { var name = Pop() as string; var module = Pop() as string; Push(ReadGlobal(module!, name!)); break; } // STACK_GLOBAL
                    case (byte)'q': _memo[data[_pos++]] = Peek(); break;        // BINPUT
                    case (byte)'r': _memo[ReadU32()] = Peek(); break;           // LONG_BINPUT
                    case 0x94: _memo[_memo.Count] = Peek(); break;              // MEMOIZE
                    case (byte)'h': Push(Memo(data[_pos++])); break;            // BINGET
                    case (byte)'j': Push(Memo(ReadU32())); break;               // LONG_BINGET
                    case (byte)'(': Push(new Mark()); break;                    // MARK
                    case (byte)')': Push(Array.Empty<object?>()); break;        // EMPTY_TUPLE
                    case (byte)'t': Push(PopToMark().ToArray()); break;         // TUPLE
                    case 0x85: Push(new[] { Pop() }); break;                    // TUPLE1
                    case 0x86: { var b = Pop(); var a = Pop(); Push(new[] { a, b }); break; }
                    case 0x87: { var c = Pop(); var b = Pop(); var a = Pop(); Push(new[] { a, b, c }); break; }
                    case (byte)'}': Push(new Dictionary<object, object?>()); break; // EMPTY_DICT
                    case (byte)']': Push(new List<object?>()); break;           // EMPTY_LIST
                    case (byte)'a': { var v = Pop(); (Peek() as List<object?> ?? throw Fail("APPEND to a non-list")).Add(v); break; }
                    case (byte)'e': { var items = PopToMark(); (Peek() as List<object?> ?? throw Fail("APPENDS to a non-list")).AddRange(items); break; }
                    case (byte)'s': { var v = Pop(); var k = Pop(); Dict()[k!] = v; break; }   // SETITEM
                    case (byte)'u': { var items = PopToMark(); var d = Dict(); for (int i = 0; i + 1 < items.Count; i += 2) d[items[i]!] = items[i + 1]; break; }
                    case (byte)'X': Push(ReadString(ReadU32())); break;         // BINUNICODE
                    case 0x8c: Push(ReadString(data[_pos++])); break;           // SHORT_BINUNICODE
                    case 0x8d: { ulong n = BitConverter.ToUInt64(Take(8)); Push(ReadString(n > long.MaxValue ? long.MaxValue : (long)n)); break; }
                    case (byte)'J': Push((long)BitConverter.ToInt32(Take(4))); break;   // BININT
                    case (byte)'K': Push((long)data[_pos++]); break;            // BININT1
                    case (byte)'M': Push((long)BitConverter.ToUInt16(Take(2))); break; // BININT2
                    case 0x8a: Push(ReadLong1()); break;                        // LONG1
                    case (byte)'G': { var b = Take(8).ToArray(); Array.Reverse(b); Push(BitConverter.ToDouble(b)); break; } // BINFLOAT
                    case (byte)'N': Push(null); break;
                    case 0x88: Push(true); break;
                    case 0x89: Push(false); break;
                    case (byte)'R': { var args = Pop() as object?[] ?? throw Fail("REDUCE without an argument tuple"); Push(Call(Pop(), args)); break; }
                    case (byte)'Q': Push(PersistentLoad(Pop())); break;         // BINPERSID
                    case (byte)'b': { Pop(); if (Peek() is not Dictionary<object, object?>) throw Fail("BUILD on something other than a state dict"); break; }
                    // Opcodes a state dict does not use but that reach a GLOBAL/INST in hostile pickles: interpreted
                    // (nothing is called) so that the global is named when it is refused.
                    case (byte)'0': Pop(); break;                               // POP
                    case (byte)'1': PopToMark(); break;                         // POP_MARK
                    case (byte)'2': Push(Peek()); break;                        // DUP
                    case (byte)'i': { var g = ReadGlobal(ReadLine(), ReadLine()); throw Fail($"refused: INST {g} at byte {_pos} (a state dict never instantiates a class)"); }
                    case (byte)'V' or (byte)'S' or (byte)'I' or (byte)'L' or (byte)'F': Push(ReadLine()); break;  // text forms
                    case (byte)'p': _memo[long.TryParse(ReadLine(), out var put) ? put : -1] = Peek(); break;     // PUT
                    case (byte)'g': Push(Memo(long.TryParse(ReadLine(), out var get) ? get : -1)); break;          // GET
                    case (byte)'U' or (byte)'C': Push(ReadString(data[_pos++])); break;                             // SHORT_BINSTRING/BYTES
                    case (byte)'T' or (byte)'B': Push(ReadString(ReadU32())); break;                                // BINSTRING/BINBYTES
                    case 0x8e or 0x96: { ulong n = BitConverter.ToUInt64(Take(8)); Push(ReadString(n > long.MaxValue ? long.MaxValue : (long)n)); break; }
                    case 0x81 or 0x92 or (byte)'o': throw Fail($"refused: opcode 0x{op:x2} at byte {_pos - 1} builds an object of a class (a state dict never does)");
                    default: throw Fail($"opcode 0x{op:x2} at byte {_pos - 1} is not one a state dict uses");
                }
            }
        }

        private object ReadGlobal(string module, string name)
        {
            string full = module + "." + name;
            if (!AllowedGlobals.Contains(full))
                throw Fail($"refused: the pickle references the global {full}, which a state dict never needs (it could run arbitrary code)");
            return new Global(module, name);
        }

        private object? Call(object? callable, object?[] args)
        {
            if (callable is not Global g) throw Fail("REDUCE on something that is not an allowed global");
            switch (g.Name)
            {
                case "OrderedDict":
                    return new Dictionary<object, object?>();
                case "_rebuild_tensor_v2":
                    if (args.Length < 4 || args[0] is not StorageRef storage) throw Fail("_rebuild_tensor_v2 with unexpected arguments");
                    return new TensorRef(storage, Convert.ToInt64(args[1]), Longs(args[2]), Longs(args[3]));
                case "_rebuild_parameter":
                    return args.Length > 0 && args[0] is TensorRef t ? t : throw Fail("_rebuild_parameter without a tensor");
                default:
                    throw Fail($"refused: calling {g.Module}.{g.Name}");
            }
        }

        private object PersistentLoad(object? pid)
        {
            if (pid is not object?[] { Length: 5 } t || t[0] as string != "storage" || t[1] is not Global { Module: "torch" } type
                || !Storages.ContainsKey(type.Name) || t[2] is not string key)
                throw Fail("a persistent id that is not a torch storage");
            return new StorageRef(type.Name, key, Convert.ToInt64(t[4]));
        }

        private long[] Longs(object? o) => o is object?[] items ? items.Select(Convert.ToInt64).ToArray() : throw Fail("a size or stride that is not a tuple");

        private Dictionary<object, object?> Dict() => Peek() as Dictionary<object, object?> ?? throw Fail("SETITEM on a non-dict");

        private void Push(object? o) => _stack.Add(o);

        private object? Pop()
        {
            if (_stack.Count == 0) throw Fail("stack underflow");
            var o = _stack[^1];
            _stack.RemoveAt(_stack.Count - 1);
            return o;
        }

        private object? Peek() => _stack.Count > 0 ? _stack[^1] : throw Fail("stack underflow");

        private List<object?> PopToMark()
        {
            int mark = _stack.FindLastIndex(o => o is Mark);
            if (mark < 0) throw Fail("no MARK on the stack");
            var items = _stack.GetRange(mark + 1, _stack.Count - mark - 1);
            _stack.RemoveRange(mark, _stack.Count - mark);
            return items;
        }

        private object? Memo(long index) => _memo.TryGetValue(index, out var v) ? v : throw Fail($"memo {index} read before it was written");

        private ReadOnlySpan<byte> Take(long n)
        {
            if (n < 0 || n > data.Length - _pos)
                throw Fail($"an opcode at byte {_pos} declares {n} bytes, but only {data.Length - _pos} remain (truncated or damaged)");
            var span = data.AsSpan(_pos, (int)n);
            _pos += (int)n;
            return span;
        }

        private long ReadU32() => BitConverter.ToUInt32(Take(4));

        private string ReadString(long length) => Encoding.UTF8.GetString(Take(length));

        private string ReadLine()
        {
            int end = Array.IndexOf(data, (byte)'\n', _pos);
            if (end < 0) throw Fail("unterminated GLOBAL");
            var s = Encoding.ASCII.GetString(data, _pos, end - _pos);
            _pos = end + 1;
            return s;
        }

        private long ReadLong1()
        {
            int n = data[_pos++];
            var bytes = Take(n);
            long value = 0;
            for (int i = n - 1; i >= 0; i--) value = (value << 8) | bytes[i];
            if (n > 0 && n < 8 && (bytes[n - 1] & 0x80) != 0) value -= 1L << (8 * n);
            return value;
        }

        private CheckpointFormatException Fail(string problem) => new(path, problem);
    }
}
