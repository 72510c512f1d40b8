namespace Multimodal.Processing;

/// <summary>The Unicode categories transformers' fast BERT tokenizer (tokenizers' <c>BertNormalizer</c> and
/// <c>BertPreTokenizer</c>) sees. It takes non-spacing marks (stripped with accents), format characters (dropped with
/// controls) and punctuation (split off) from the <c>unicode_categories</c> crate, whose tables are about Unicode 8;
/// .NET's are current. These are the code points where the two disagree, found by running every code point through
/// the Rust library and through this tokenizer (<c>NormalizerOracleTests</c> sweeps them all again in the suite).
/// A code point assigned since the crate's tables is an ordinary character to it: kept, not split, not stripped.</summary>
internal static class BertUnicode
{
    /// <summary>Non-spacing marks today that the crate does not know as such (so accents stripping keeps them).</summary>
    private static readonly (int First, int Last)[] NotNonSpacingMark =
    [
        (0x07FD, 0x07FD), (0x0897, 0x089F), (0x08CA, 0x08E1), (0x09FE, 0x09FE), (0x0AFA, 0x0AFF), (0x0B55, 0x0B55),
        (0x0C04, 0x0C04), (0x0C3C, 0x0C3C), (0x0D00, 0x0D00), (0x0D3B, 0x0D3C), (0x0D81, 0x0D81), (0x0EBA, 0x0EBA),
        (0x0ECE, 0x0ECE), (0x180F, 0x180F), (0x1885, 0x1886), (0x1ABF, 0x1ACE), (0x1DF6, 0x1DFB), (0xA82C, 0xA82C),
        (0xA8C5, 0xA8C5), (0xA8FF, 0xA8FF), (0xA9BD, 0xA9BD), (0x10D24, 0x10D27), (0x10D69, 0x10D6D),
        (0x10EAB, 0x10EAC), (0x10EFC, 0x10EFF), (0x10F46, 0x10F50), (0x10F82, 0x10F85), (0x11070, 0x11070),
        (0x11073, 0x11074), (0x110C2, 0x110C2), (0x111C9, 0x111C9), (0x111CF, 0x111CF), (0x1123E, 0x1123E),
        (0x11241, 0x11241), (0x1133B, 0x1133B), (0x113BB, 0x113C0), (0x113CE, 0x113CE), (0x113D0, 0x113D0),
        (0x113D2, 0x113D2), (0x113E1, 0x113E2), (0x11438, 0x1143F), (0x11442, 0x11444), (0x11446, 0x11446),
        (0x1145E, 0x1145E), (0x1182F, 0x11837), (0x11839, 0x1183A), (0x1193B, 0x1193C), (0x1193E, 0x1193E),
        (0x11943, 0x11943), (0x119D4, 0x119D7), (0x119DA, 0x119DB), (0x119E0, 0x119E0), (0x11A01, 0x11A0A),
        (0x11A33, 0x11A38), (0x11A3B, 0x11A3E), (0x11A47, 0x11A47), (0x11A51, 0x11A56), (0x11A59, 0x11A5B),
        (0x11A8A, 0x11A96), (0x11A98, 0x11A99), (0x11C30, 0x11C36), (0x11C38, 0x11C3D), (0x11C3F, 0x11C3F),
        (0x11C92, 0x11CA7), (0x11CAA, 0x11CB0), (0x11CB2, 0x11CB3), (0x11CB5, 0x11CB6), (0x11D31, 0x11D36),
        (0x11D3A, 0x11D3A), (0x11D3C, 0x11D3D), (0x11D3F, 0x11D45), (0x11D47, 0x11D47), (0x11D90, 0x11D91),
        (0x11D95, 0x11D95), (0x11D97, 0x11D97), (0x11EF3, 0x11EF4), (0x11F00, 0x11F01), (0x11F36, 0x11F3A),
        (0x11F40, 0x11F40), (0x11F42, 0x11F42), (0x11F5A, 0x11F5A), (0x13440, 0x13440), (0x13447, 0x13455),
        (0x1611E, 0x16129), (0x1612D, 0x1612F), (0x16F4F, 0x16F4F), (0x16FE4, 0x16FE4), (0x1CF00, 0x1CF2D),
        (0x1CF30, 0x1CF46), (0x1E000, 0x1E006), (0x1E008, 0x1E018), (0x1E01B, 0x1E021), (0x1E023, 0x1E024),
        (0x1E026, 0x1E02A), (0x1E08F, 0x1E08F), (0x1E130, 0x1E136), (0x1E2AE, 0x1E2AE), (0x1E2EC, 0x1E2EF),
        (0x1E4EC, 0x1E4EF), (0x1E5EE, 0x1E5EF), (0x1E944, 0x1E94A),
    ];

    /// <summary>Non-spacing marks in the crate that are spacing marks today.</summary>
    private static readonly (int First, int Last)[] OldNonSpacingMark =
    [
        (0x1734, 0x1734), (0x1171E, 0x1171E),
    ];

    /// <summary>Punctuation today that the crate does not know as such (not split off).</summary>
    private static readonly (int First, int Last)[] NotPunctuation =
    [
        (0x061D, 0x061D), (0x09FD, 0x09FD), (0x0A76, 0x0A76), (0x0C77, 0x0C77), (0x0C84, 0x0C84), (0x1B4E, 0x1B4F),
        (0x1B7D, 0x1B7F), (0x2E43, 0x2E4F), (0x2E52, 0x2E5D), (0x10D6E, 0x10D6E), (0x10EAD, 0x10EAD),
        (0x10F55, 0x10F59), (0x10F86, 0x10F89), (0x113D4, 0x113D5), (0x113D7, 0x113D8), (0x1144B, 0x1144F),
        (0x1145A, 0x1145B), (0x1145D, 0x1145D), (0x11660, 0x1166C), (0x116B9, 0x116B9), (0x1183B, 0x1183B),
        (0x11944, 0x11946), (0x119E2, 0x119E2), (0x11A3F, 0x11A46), (0x11A9A, 0x11A9C), (0x11A9E, 0x11AA2),
        (0x11B00, 0x11B09), (0x11BE1, 0x11BE1), (0x11C41, 0x11C45), (0x11C70, 0x11C71), (0x11EF7, 0x11EF8),
        (0x11F43, 0x11F4F), (0x11FFF, 0x11FFF), (0x12FF1, 0x12FF2), (0x16D6D, 0x16D6F), (0x16E97, 0x16E9A),
        (0x16FE2, 0x16FE2), (0x1E5FF, 0x1E5FF), (0x1E95E, 0x1E95F),
    ];

    /// <summary>Punctuation in the crate that is a symbol or a non-spacing mark today.</summary>
    private static readonly (int First, int Last)[] OldPunctuation =
    [
        (0x166D, 0x166D), (0x111C9, 0x111C9),
    ];

    /// <summary>Format characters today that the crate does not know as such (not dropped).</summary>
    private static readonly (int First, int Last)[] NotFormat =
    [
        (0x0890, 0x0891), (0x08E2, 0x08E2), (0x110CD, 0x110CD), (0x13430, 0x1343F),
    ];

    /// <summary>Whether accents stripping removes <paramref name="cp"/> (a non-spacing mark to the crate).</summary>
    public static bool IsNonSpacingMark(int cp, System.Globalization.UnicodeCategory current) =>
        current == System.Globalization.UnicodeCategory.NonSpacingMark ? !In(NotNonSpacingMark, cp) : In(OldNonSpacingMark, cp);

    /// <summary>Whether <paramref name="cp"/>, of a punctuation category today, was one to the crate; or, of another
    /// category, was punctuation then.</summary>
    public static bool IsPunctuation(int cp, bool punctuationToday) => punctuationToday ? !In(NotPunctuation, cp) : In(OldPunctuation, cp);

    /// <summary>Whether a format character today was one to the crate.</summary>
    public static bool IsFormat(int cp) => !In(NotFormat, cp);

    private static bool In((int First, int Last)[] ranges, int cp)
    {
        int lo = 0, hi = ranges.Length - 1;
        while (lo <= hi)
        {
            int mid = (lo + hi) >>> 1;
            if (cp < ranges[mid].First) hi = mid - 1;
            else if (cp > ranges[mid].Last) lo = mid + 1;
            else return true;
        }
        return false;
    }
}
