using System.Globalization;
using System.Text;

namespace Multimodal.Processing;

/// <summary>SentencePiece's precompiled normalization rules (<c>NormalizerSpec.precompiled_charsmap</c>, e.g. T5's
/// <c>nmt_nfkc</c>) applied as transformers' fast tokenizers apply them (tokenizers' <c>Precompiled</c>
/// normalizer): per grapheme, its replacement if the grapheme (under 6 UTF-8 bytes) has one, otherwise per
/// character. The rules live in a darts-clone double-array trie over UTF-8 bytes followed by the
/// NUL-terminated replacement strings; control characters are dropped (U+000B) or become spaces (U+000C),
/// zero-width and other spaces become spaces, NFKC forms are folded.</summary>
internal sealed class PrecompiledCharsMap
{
    private readonly uint[] _trie;
    private readonly byte[] _normalized;

    /// <summary>Reads the blob: a little-endian u32 trie size in bytes, the trie, the replacement strings.</summary>
    public PrecompiledCharsMap(byte[] blob)
    {
        if (blob.Length < 4) throw new InvalidDataException("precompiled_charsmap is shorter than its size field");
        uint size = BitConverter.ToUInt32(blob, 0);
        if (size % 4 != 0 || size > blob.Length - 4) throw new InvalidDataException("precompiled_charsmap's trie size is inconsistent");
        _trie = new uint[size / 4];
        Buffer.BlockCopy(blob, 4, _trie, 0, (int)size);
        _normalized = blob[(4 + (int)size)..];
    }

    /// <summary>Reads the charsmap of a SentencePiece model (ModelProto field 3, NormalizerSpec field 2), or null.</summary>
    public static PrecompiledCharsMap? FromModel(byte[] model)
    {
        foreach (var (field, wire, _, payload) in Protobuf.Fields(model))
            if (field == 3 && wire == 2)
                foreach (var (f, w, _, blob) in Protobuf.Fields(payload))
                    if (f == 2 && w == 2 && blob.Length > 0) return new PrecompiledCharsMap(blob);
        return null;
    }

    /// <summary>The text with every rule applied.</summary>
    public string Normalize(string text)
    {
        var output = new StringBuilder(text.Length);
        var graphemes = StringInfo.GetTextElementEnumerator(text);
        while (graphemes.MoveNext())
        {
            string grapheme = (string)graphemes.Current;
            if (Encoding.UTF8.GetByteCount(grapheme) < 6 && Transform(grapheme) is { } whole)
            {
                output.Append(whole);
                continue;
            }
            foreach (var rune in grapheme.EnumerateRunes())
                output.Append(Transform(rune.ToString()) ?? rune.ToString());
        }
        return output.ToString();
    }

    // The replacement of the first (shortest) rule that is a prefix of the chunk, as tokenizers' Precompiled does.
    private string? Transform(string chunk)
    {
        var key = Encoding.UTF8.GetBytes(chunk);
        int node = 0;
        uint unit = Unit(node);
        node ^= Offset(unit);
        foreach (byte c in key)
        {
            if (c == 0) break;
            node ^= c;
            unit = Unit(node);
            if ((unit & ((1u << 31) | 0xFF)) != c) return null;
            node ^= Offset(unit);
            if (((unit >> 8) & 1) != 0)
            {
                int start = (int)(Unit(node) & ((1u << 31) - 1));
                if (start >= _normalized.Length) return null;
                int end = Array.IndexOf(_normalized, (byte)0, start);
                return Encoding.UTF8.GetString(_normalized, start, (end < 0 ? _normalized.Length : end) - start);
            }
        }
        return null;
    }

    private uint Unit(int index) => index >= 0 && index < _trie.Length ? _trie[index] : 0;

    private static int Offset(uint unit) => (int)((unit >> 10) << (int)((unit & (1u << 9)) >> 6));
}
