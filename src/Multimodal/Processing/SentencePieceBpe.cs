using System.Text;

namespace Multimodal.Processing;

/// <summary>SentencePiece's BPE encoder (google/sentencepiece <c>bpe_model.cc</c> <c>Model::SampleEncode</c>
/// without sampling, with the processor's byte fallback), read from a <c>tokenizer.model</c>. Written because
/// Microsoft.ML.Tokenizers (2.0.1 and 3.0.0) merges the rightmost of equal-score pairs first, where upstream —
/// and transformers' fast LLaMA tokenizer — merge the leftmost: a run of spaces, <c>FFF</c>, <c>!!!!</c> come
/// out split differently.</summary>
internal sealed class SentencePieceBpe
{
    private enum PieceType { Normal = 1, Unknown = 2, Control = 3, UserDefined = 4, Unused = 5, Byte = 6 }

    private readonly Dictionary<string, (int Id, float Score, PieceType Type)> _pieces = new(StringComparer.Ordinal);
    private readonly int[] _byteIds = Enumerable.Repeat(-1, 256).ToArray();
    private readonly int _unkId;
    private readonly bool _byteFallback;
    private readonly bool _addDummyPrefix;
    private readonly bool _removeExtraWhitespaces;
    private readonly bool _escapeWhitespaces;
    private readonly string[] _userDefined;

    /// <summary>Reads the model proto: pieces (field 1: piece, score, type), trainer spec (field 2:
    /// <c>byte_fallback</c> = 35, <c>unk_id</c> = 40), normalizer spec (field 3: <c>add_dummy_prefix</c> = 3,
    /// <c>remove_extra_whitespaces</c> = 4, <c>escape_whitespaces</c> = 5; all default true).</summary>
    public SentencePieceBpe(byte[] model)
    {
        int id = 0;
        _addDummyPrefix = _removeExtraWhitespaces = _escapeWhitespaces = true;
        foreach (var (field, _, _, payload) in Protobuf.Fields(model))
        {
            switch (field)
            {
                case 1:
                    string piece = "";
                    float score = 0;
                    var type = PieceType.Normal;
                    foreach (var (f, _, value, bytes) in Protobuf.Fields(payload))
                    {
                        if (f == 1) piece = Encoding.UTF8.GetString(bytes);
                        else if (f == 2) score = BitConverter.Int32BitsToSingle((int)(uint)value);
                        else if (f == 3) type = (PieceType)(int)value;
                    }
                    _pieces.TryAdd(piece, (id, score, type));
                    if (type == PieceType.Byte && piece.Length == 6 && piece.StartsWith("<0x", StringComparison.Ordinal))
                        _byteIds[Convert.ToInt32(piece[3..5], 16)] = id;
                    id++;
                    break;
                case 2:
                    foreach (var (f, _, value, _) in Protobuf.Fields(payload))
                    {
                        if (f == 35) _byteFallback = value != 0;
                        else if (f == 40) _unkId = (int)value;
                    }
                    break;
                case 3:
                    foreach (var (f, _, value, _) in Protobuf.Fields(payload))
                    {
                        if (f == 3) _addDummyPrefix = value != 0;
                        else if (f == 4) _removeExtraWhitespaces = value != 0;
                        else if (f == 5) _escapeWhitespaces = value != 0;
                    }
                    break;
            }
        }
        _userDefined = _pieces.Where(p => p.Value.Type == PieceType.UserDefined).Select(p => p.Key).OrderByDescending(p => p.Length).ToArray();
    }

    /// <summary>Id and score of a normal piece (for tests that derive expected ids independently).</summary>
    internal (int Id, float Score)? NormalPiece(string piece) =>
        _pieces.TryGetValue(piece, out var info) && info.Type == PieceType.Normal ? (info.Id, info.Score) : null;

    /// <summary>Ids of one text segment, as <c>SentencePieceProcessor::Encode</c> gives them.</summary>
    public List<int> Encode(string text)
    {
        string normalized = Normalize(text);
        var ids = new List<int>();
        if (normalized.Length == 0) return ids;

        // One symbol per character (a user-defined piece is one frozen symbol); indices stay fixed while
        // merges empty the right symbol of each pair.
        var pieces = new List<string>();
        var frozen = new List<bool>();
        for (int i = 0; i < normalized.Length;)
        {
            string? user = _userDefined.FirstOrDefault(u => string.CompareOrdinal(normalized, i, u, 0, u.Length) == 0);
            int length = user?.Length ?? (char.IsHighSurrogate(normalized[i]) && i + 1 < normalized.Length ? 2 : 1);
            pieces.Add(normalized.Substring(i, length));
            frozen.Add(user is not null);
            i += length;
        }
        int n = pieces.Count;
        var prev = Enumerable.Range(-1, n).ToArray();
        var next = Enumerable.Range(1, n).Select(j => j < n ? j : -1).ToArray();
        var revMerge = new Dictionary<string, (string, string)>(StringComparer.Ordinal);

        // The agenda pops the highest score; among equal scores the leftmost pair (upstream's comparator).
        var agenda = new PriorityQueue<(int Left, int Right, int Length), (float, int)>(
            Comparer<(float Score, int Left)>.Create((a, b) => a.Score != b.Score ? b.Score.CompareTo(a.Score) : a.Left.CompareTo(b.Left)));
        void MaybeAdd(int left, int right)
        {
            if (left < 0 || right < 0 || frozen[left] || frozen[right]) return;
            string merged = pieces[left] + pieces[right];
            if (!_pieces.TryGetValue(merged, out var info) || info.Type is not (PieceType.Normal or PieceType.UserDefined or PieceType.Unused)) return;
            agenda.Enqueue((left, right, merged.Length), (info.Score, left));
            if (info.Type == PieceType.Unused) revMerge[merged] = (pieces[left], pieces[right]);
        }
        for (int i = 1; i < n; i++) MaybeAdd(i - 1, i);
        while (agenda.TryDequeue(out var top, out _))
        {
            // Stale: one side was merged away or grew since the pair was queued.
            if (pieces[top.Left].Length == 0 || pieces[top.Right].Length == 0 || pieces[top.Left].Length + pieces[top.Right].Length != top.Length) continue;
            pieces[top.Left] += pieces[top.Right];
            pieces[top.Right] = "";
            next[top.Left] = next[top.Right];
            if (next[top.Right] >= 0) prev[next[top.Right]] = top.Left;
            MaybeAdd(prev[top.Left], top.Left);
            MaybeAdd(top.Left, next[top.Left]);
        }
        for (int i = 0; i >= 0; i = next[i]) Resegment(pieces[i], ids, revMerge);
        return ids;
    }

    // An unused piece is split back into the pieces it was merged from; an unknown one becomes its UTF-8
    // bytes when the model has byte fallback, else the unknown id.
    private void Resegment(string piece, List<int> ids, Dictionary<string, (string Left, string Right)> revMerge)
    {
        if (_pieces.TryGetValue(piece, out var info) && info.Type is PieceType.Normal or PieceType.UserDefined)
        {
            ids.Add(info.Id);
            return;
        }
        if (revMerge.TryGetValue(piece, out var parts))
        {
            Resegment(parts.Left, ids, revMerge);
            Resegment(parts.Right, ids, revMerge);
            return;
        }
        if (_byteFallback && Encoding.UTF8.GetBytes(piece).All(b => _byteIds[b] >= 0))
            ids.AddRange(Encoding.UTF8.GetBytes(piece).Select(b => _byteIds[b]));
        else if (ids.Count > 0 && ids[^1] == _unkId && !_byteFallback)
            return;                                               // consecutive unknowns fuse into one
        else
            ids.Add(_unkId);
    }

    private string Normalize(string text)
    {
        if (_removeExtraWhitespaces) text = string.Join(' ', text.Split(' ', StringSplitOptions.RemoveEmptyEntries));
        if (text.Length == 0) return "";
        if (_addDummyPrefix) text = " " + text;
        return _escapeWhitespaces ? text.Replace(' ', '\u2581') : text;
    }
}
