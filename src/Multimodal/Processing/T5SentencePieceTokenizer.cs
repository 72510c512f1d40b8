using System.Text;
using Microsoft.ML.Tokenizers;

namespace Multimodal.Processing;

/// <summary>transformers v4.45.1 <c>T5TokenizerFast</c> (Flan-T5, T5 v1.1) on Microsoft.ML.Tokenizers'
/// SentencePiece Unigram model: EOS <c>&lt;/s&gt;</c> appended, the 100 sentinels <c>&lt;extra_id_N&gt;</c>
/// (= 32099 − N) and the special tokens matched whole, runs of unknown characters fused into one
/// <c>&lt;unk&gt;</c> as the fast tokenizer does.</summary>
/// <remarks>Microsoft.ML.Tokenizers 2.0.1's Unigram constructor indexes the BOS piece, and T5's model has
/// none (<c>bos_id = -1</c>): it throws. The model bytes are patched in memory so <c>bos_id</c> points at
/// <c>&lt;unk&gt;</c>; BOS is never added, so nothing else changes (all 47 reference strings agree).</remarks>
public sealed partial class T5SentencePieceTokenizer : ITextTokenizer
{
    private readonly SentencePieceTokenizer _sp;
    private readonly PrecompiledCharsMap? _charsMap;
    private readonly Dictionary<string, int> _added;
    private readonly Dictionary<long, string> _addedById;
    private readonly int _unk;

    /// <inheritdoc/>
    public IReadOnlySet<long> SpecialIds { get; }

    /// <inheritdoc/>
    public long? PadTokenId => 0;

    /// <inheritdoc/>
    public int LongestTokenBytes => _longest ??= _sp.Vocabulary.Keys.Concat(_added.Keys).Max(System.Text.Encoding.UTF8.GetByteCount);
    private int? _longest;

    /// <summary>EOS id.</summary>
    public long EosTokenId { get; }

    private T5SentencePieceTokenizer(SentencePieceTokenizer sp, PrecompiledCharsMap? charsMap, int pieces, int extraIds)
    {
        _sp = sp;
        _charsMap = charsMap;
        int vocab = pieces;
        _added = new Dictionary<string, int> { ["<pad>"] = 0, ["</s>"] = 1, ["<unk>"] = 2 };
        for (int n = 0; n < extraIds; n++) _added[$"<extra_id_{n}>"] = vocab + extraIds - 1 - n;
        _addedById = _added.ToDictionary(kv => (long)kv.Value, kv => kv.Key);
        SpecialIds = _added.Values.Select(v => (long)v).ToHashSet();
        EosTokenId = 1;
        _unk = 2;
    }

    /// <summary>Reads <c>spiece.model</c>; T5 adds <paramref name="extraIds"/> sentinel tokens (100).</summary>
    public static T5SentencePieceTokenizer FromModel(string path, int extraIds = 100)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"SentencePiece model '{path}' does not exist.", path);
        byte[] model = File.ReadAllBytes(path);
        try
        {
            // ModelProto field 2 = TrainerSpec; TrainerSpec field 41 = bos_id.
            var patched = Protobuf.Rewrite(model, (field, wire, payload) =>
                field == 2 && wire == 2 ? Protobuf.Rewrite(payload, (f, w, _) => f == 41 && w == 0 ? Protobuf.Varint(2) : null) : null);
            int pieces = 0;
            Protobuf.Rewrite(model, (field, _, _) => { if (field == 1) pieces++; return null; });   // ModelProto field 1 = pieces
            return new T5SentencePieceTokenizer(SentencePieceTokenizer.Create(new MemoryStream(patched), false, false),
                PrecompiledCharsMap.FromModel(model), pieces, extraIds);
        }
        catch (Exception e) when (e is IndexOutOfRangeException or ArgumentException or InvalidDataException or FormatException)
        {
            throw new InvalidDataException($"'{path}' is not a SentencePiece Unigram model: {e.Message}", e);
        }
    }

    /// <inheritdoc/>
    public IReadOnlyList<long> Encode(string text, bool addSpecialTokens = true)
    {
        ArgumentNullException.ThrowIfNull(text);
        text = UnicodeText.WithoutLoneSurrogates(text);
        var ids = new List<long>();
        foreach (var (segment, id) in AddedTokens.Split(text, _added))
        {
            if (id is int added) { ids.Add(added); continue; }
            foreach (var piece in PreTokenize(_charsMap?.Normalize(segment) ?? segment))
            {
                // Already normalized: the library's own SentencePiece normalizer would fold again (composing "a" and
                // a combining mark that the per-grapheme rules left apart).
                int start = ids.Count;
                foreach (var token in _sp.EncodeToIds(piece, addBeginningOfSentence: false, addEndOfSentence: false,
                             considerPreTokenization: false, considerNormalization: false))
                    if (!(token == _unk && ids.Count > start && ids[^1] == _unk)) ids.Add(token);   // fuse_unk, within a piece
            }
        }
        if (addSpecialTokens) ids.Add(EosTokenId);
        return ids;
    }

    /// <summary>T5TokenizerFast after its charsmap: trailing white space stripped (Unicode's White_Space, which
    /// U+0085, U+2028 and U+2029 are), each run of two or more U+0020 replaced by one "▁", then <c>Metaspace</c>:
    /// U+0020 becomes "▁", "▁" is put in front, and the text is split before each "▁". Only U+0020 splits: other
    /// white space the charsmap keeps stays inside its piece.</summary>
    private static IEnumerable<string> PreTokenize(string normalized)
    {
        int end = normalized.Length;
        while (end > 0)
        {
            bool low = char.IsLowSurrogate(normalized[end - 1]) && end > 1;
            var last = low ? new Rune(normalized[end - 2], normalized[end - 1]) : new Rune(normalized[end - 1]);
            if (!Rune.IsWhiteSpace(last)) break;
            end -= last.Utf16SequenceLength;
        }
        if (end == 0) yield break;
        string text = SpaceRuns().Replace(normalized[..end], "\u2581").Replace(' ', '\u2581');
        if (text[0] != '\u2581') text = "\u2581" + text;
        for (int start = 0; start < text.Length;)
        {
            int next = text.IndexOf('\u2581', start + 1);
            if (next < 0) next = text.Length;
            yield return text[start..next];
            start = next;
        }
    }

    [System.Text.RegularExpressions.GeneratedRegex(" {2,}")]
    private static partial System.Text.RegularExpressions.Regex SpaceRuns();

    /// <inheritdoc/>
    public string Decode(IEnumerable<long> ids, bool skipSpecialTokens = true)
    {
        if (skipSpecialTokens) return _sp.Decode(ids.Where(id => !_addedById.ContainsKey(id)).Select(id => (int)id));
        var text = new System.Text.StringBuilder();
        var run = new List<int>();
        foreach (var id in ids)
        {
            if (_addedById.TryGetValue(id, out var added)) { text.Append(_sp.Decode(run)).Append(added); run.Clear(); }
            else run.Add((int)id);
        }
        return text.Append(_sp.Decode(run)).ToString();
    }

    /// <inheritdoc/>
    public IStreamingDecoder CreateStreamingDecoder(bool skipSpecialTokens = true) =>
        new SentencePieceStreamingDecoder(_sp, _addedById, skipSpecialTokens);
}

/// <summary>Just enough protobuf wire format to read a SentencePiece model and rewrite one field of it.</summary>
internal static class Protobuf
{
    /// <summary>The fields of a message in order: number, wire type, the value of a varint or 32-bit field,
    /// and the bytes of a length-delimited one.</summary>
    public static IEnumerable<(int Field, int Wire, ulong Value, byte[] Payload)> Fields(byte[] message)
    {
        int p = 0;
        while (p < message.Length)
        {
            ulong key = ReadVarint(message, ref p);
            int field = (int)(key >> 3), wire = (int)(key & 7);
            ulong value = 0;
            byte[] payload = [];
            switch (wire)
            {
                case 0: value = ReadVarint(message, ref p); break;
                case 1: p += 8; break;
                case 5:
                    if (p + 4 > message.Length) throw new InvalidDataException("truncated protobuf message");
                    value = BitConverter.ToUInt32(message, p);
                    p += 4;
                    break;
                case 2:
                    int length = checked((int)ReadVarint(message, ref p));
                    if (length < 0 || p + length > message.Length) throw new InvalidDataException("truncated protobuf message");
                    payload = message[p..(p + length)];
                    p += length;
                    break;
                default: throw new InvalidDataException($"unsupported protobuf wire type {wire}");
            }
            if (p > message.Length) throw new InvalidDataException("truncated protobuf message");
            yield return (field, wire, value, payload);
        }
    }

    /// <summary>Copies a message, replacing the payload of fields for which <paramref name="replace"/> returns bytes.</summary>
    public static byte[] Rewrite(byte[] message, Func<int, int, byte[], byte[]?> replace)
    {
        var output = new List<byte>();
        int p = 0;
        while (p < message.Length)
        {
            int start = p;
            ulong key = ReadVarint(message, ref p);
            int field = (int)(key >> 3), wire = (int)(key & 7), payloadStart = p;
            switch (wire)
            {
                case 0: ReadVarint(message, ref p); break;
                case 1: p += 8; break;
                case 5: p += 4; break;
                case 2:
                    int length = checked((int)ReadVarint(message, ref p));
                    payloadStart = p;
                    p += length;
                    break;
                default: throw new InvalidDataException($"unsupported protobuf wire type {wire}");
            }
            if (p > message.Length) throw new InvalidDataException("truncated protobuf message");
            var replacement = replace(field, wire, message[payloadStart..p]);
            if (replacement is null)
            {
                output.AddRange(message[start..p]);
                continue;
            }
            output.AddRange(Varint(key));
            if (wire == 2) output.AddRange(Varint((ulong)replacement.Length));
            output.AddRange(replacement);
        }
        return output.ToArray();
    }

    public static byte[] Varint(ulong value)
    {
        var bytes = new List<byte>();
        while (value >= 0x80) { bytes.Add((byte)(value | 0x80)); value >>= 7; }
        bytes.Add((byte)value);
        return bytes.ToArray();
    }

    private static ulong ReadVarint(byte[] b, ref int p)
    {
        ulong v = 0;
        for (int shift = 0; ; shift += 7)
        {
            if (p >= b.Length) throw new InvalidDataException("truncated protobuf varint");
            byte x = b[p++];
            v |= (ulong)(x & 0x7f) << shift;
            if (x < 0x80) return v;
        }
    }
}
