using System.Text;
using Multimodal.Processing;
using Xunit.Abstractions;

namespace Multimodal.Tests.Processing;

/// <summary>Strings where tokenizers differ from upstream in their corners: equal-score BPE merges
/// (LLaMA), each expected id sequence derived from the upstream algorithm as stated per test.</summary>
public sealed class TokenizerStressTests(ITestOutputHelper output)
{
    private static readonly string Root = Path.Combine(AppContext.BaseDirectory, "Tokenizers");

    /// <summary>sentencepiece <c>bpe_model.cc</c>, written naively: "▁" + the text with spaces as "▁", one
    /// symbol per character; while some adjacent pair forms a vocabulary piece, merge the pair whose piece has
    /// the highest score, the leftmost among equal scores (upstream's <c>SymbolPairComparator</c>); then each
    /// symbol's id (none of these strings needs byte fallback).</summary>
    private static List<long> Upstream(SentencePieceBpe model, string text)
    {
        var symbols = ("\u2581" + text.Replace(' ', '\u2581')).Select(c => c.ToString()).ToList();
        while (true)
        {
            int best = -1;
            float bestScore = float.NegativeInfinity;
            for (int i = 0; i + 1 < symbols.Count; i++)
                if (model.NormalPiece(symbols[i] + symbols[i + 1]) is { } piece && piece.Score > bestScore)
                {
                    best = i;
                    bestScore = piece.Score;
                }
            if (best < 0) break;
            symbols[best] += symbols[best + 1];
            symbols.RemoveAt(best + 1);
        }
        return symbols.Select(s => (long)model.NormalPiece(s)!.Value.Id).ToList();
    }

    [Theory]
    [InlineData("                              ")]   // 30 spaces: a run of equal "▁▁" merges
    [InlineData("FFF")]
    [InlineData("aFFF")]
    [InlineData("!!!!")]
    [InlineData("????")]
    [InlineData("aaaa")]
    [InlineData("xxxxxxxx")]
    [InlineData("........")]
    [InlineData("a  b   c    d")]
    [InlineData("----====----")]
    public void Llama_merges_equal_score_pairs_leftmost_first(string text)
    {
        var tokenizer = LlamaSentencePieceTokenizer.FromModel(Path.Combine(Root, "llama", "tokenizer.model"));
        var expected = Upstream(tokenizer.Encoder, text);
        var actual = tokenizer.Encode(text, addSpecialTokens: false);
        output.WriteLine($"[{text}] expected {string.Join(",", expected)} actual {string.Join(",", actual)}");
        Assert.Equal(expected, actual);
        Assert.Equal(text, tokenizer.Decode(actual));
    }
}

/// <summary>BERT's lower case is the fast tokenizer's (tokenizers' <c>NormalizedString::lowercase</c>): each character's
/// full lowercase mapping on its own — U+0130 → "i" + U+0307; a capital sigma is always σ, with no Final_Sigma context
/// (the slow tokenizer's Python <c>str.lower</c> would give ς at the end of a word; transformers loads the fast one, and
/// NormalizerOracleTests checks these against the Rust library).</summary>
public sealed class BertLowercaseTests
{
    [Theory]
    [InlineData("\u0130stanbul", "i\u0307stanbul")]
    [InlineData("ΟΔΟΣ", "οδοσ")]
    [InlineData("ΣΑΣ ΟΣ.", "σασ οσ.")]
    [InlineData("Σ", "σ")]
    [InlineData("AΣB", "aσb")]
    [InlineData("ǅ ẞ Ω", "ǆ ß ω")]
    public void Lowercasing_is_per_character(string text, string expected) =>
        Assert.Equal(expected, BertWordPieceTokenizer.Lower(text));

    [Fact]
    public void Dotted_capital_i_and_sigma_tokenize_as_the_fast_tokenizer()
    {
        var bert = BertWordPieceTokenizer.FromVocab(Path.Combine(AppContext.BaseDirectory, "Tokenizers", "bert", "vocab.txt"));
        // bert-base-uncased: [CLS] = 101, "istanbul" = 9960, [SEP] = 102 (line numbers of vocab.txt minus one).
        Assert.Equal([101L, 9960, 102], bert.Encode("\u0130stanbul"));
        // "ΟΔΟΣ" lowers to "οδοσ": the medial σ ("##σ" = 29733), never the final ς ("##ς" = 19579).
        var greek = bert.Encode("ΟΔΟΣ");
        Assert.Contains(29733L, greek);
        Assert.DoesNotContain(19579L, greek);
    }
}

/// <summary>T5's normalizer on every control (Cc), format (Cf) and whitespace character: what upstream's
/// <c>Precompiled</c> normalizer makes of each, then whitespace splitting. The three lists were produced by a
/// direct Python transcription of the darts-clone prefix search over this spiece.model's
/// <c>precompiled_charsmap</c> (independent of the C# port): the rule's replacement is "" (dropped), " "
/// (a space), or there is no rule (the character stays, inside its word).</summary>
public sealed class T5NormalizerTests(ITestOutputHelper output)
{
    private static readonly int[] Dropped =
    [
        0x0001, 0x0002, 0x0003, 0x0004, 0x0005, 0x0006, 0x0007, 0x0008, 0x000B, 0x000E, 0x000F, 0x0010, 0x0011,
        0x0012, 0x0013, 0x0014, 0x0015, 0x0016, 0x0017, 0x0018, 0x0019, 0x001A, 0x001B, 0x001C, 0x001D, 0x001E,
        0x001F, 0x007F, 0x008F, 0x009F,
    ];

    private static readonly int[] ToSpace =
    [
        0x0009, 0x000A, 0x000C, 0x000D, 0x00A0, 0x1680, 0x2000, 0x2001, 0x2002, 0x2003, 0x2004, 0x2005, 0x2006,
        0x2007, 0x2008, 0x2009, 0x200A, 0x200B, 0x200C, 0x200D, 0x200E, 0x200F, 0x2028, 0x2029, 0x202F, 0x205F,
        0x3000, 0xFEFF,
    ];

    private static readonly int[] Kept =
    [
        0x0000, 0x0020, 0x0080, 0x0081, 0x0082, 0x0083, 0x0084, 0x0085, 0x0086, 0x0087, 0x0088, 0x0089, 0x008A,
        0x008B, 0x008C, 0x008D, 0x008E, 0x0090, 0x0091, 0x0092, 0x0093, 0x0094, 0x0095, 0x0096, 0x0097, 0x0098,
        0x0099, 0x009A, 0x009B, 0x009C, 0x009D, 0x009E, 0x00AD, 0x0600, 0x0601, 0x0602, 0x0603, 0x0604, 0x0605,
        0x061C, 0x06DD, 0x070F, 0x0890, 0x0891, 0x08E2, 0x180E, 0x202A, 0x202B, 0x202C, 0x202D, 0x202E, 0x2060,
        0x2061, 0x2062, 0x2063, 0x2064, 0x2066, 0x2067, 0x2068, 0x2069, 0x206A, 0x206B, 0x206C, 0x206D, 0x206E,
        0x206F, 0xFFF9, 0xFFFA, 0xFFFB, 0x110BD, 0x110CD, 0x13430, 0x13431, 0x13432, 0x13433, 0x13434, 0x13435,
        0x13436, 0x13437, 0x13438, 0x1BCA0, 0x1BCA1, 0x1BCA2, 0x1BCA3, 0x1D173, 0x1D174, 0x1D175, 0x1D176, 0x1D177,
        0x1D178, 0x1D179, 0x1D17A, 0xE0001, 0xE0020, 0xE0021, 0xE0022, 0xE0023, 0xE0024, 0xE0025, 0xE0026, 0xE0027,
        0xE0028, 0xE0029, 0xE002A, 0xE002B, 0xE002C, 0xE002D, 0xE002E, 0xE002F, 0xE0030, 0xE0031, 0xE0032, 0xE0033,
        0xE0034, 0xE0035, 0xE0036, 0xE0037, 0xE0038, 0xE0039, 0xE003A, 0xE003B, 0xE003C, 0xE003D, 0xE003E, 0xE003F,
        0xE0040, 0xE0041, 0xE0042, 0xE0043, 0xE0044, 0xE0045, 0xE0046, 0xE0047, 0xE0048, 0xE0049, 0xE004A, 0xE004B,
        0xE004C, 0xE004D, 0xE004E, 0xE004F, 0xE0050, 0xE0051, 0xE0052, 0xE0053, 0xE0054, 0xE0055, 0xE0056, 0xE0057,
        0xE0058, 0xE0059, 0xE005A, 0xE005B, 0xE005C, 0xE005D, 0xE005E, 0xE005F, 0xE0060, 0xE0061, 0xE0062, 0xE0063,
        0xE0064, 0xE0065, 0xE0066, 0xE0067, 0xE0068, 0xE0069, 0xE006A, 0xE006B, 0xE006C, 0xE006D, 0xE006E, 0xE006F,
        0xE0070, 0xE0071, 0xE0072, 0xE0073, 0xE0074, 0xE0075, 0xE0076, 0xE0077, 0xE0078, 0xE0079, 0xE007A, 0xE007B,
        0xE007C, 0xE007D, 0xE007E, 0xE007F,
    ];

    [Fact]
    public void Every_control_format_and_space_character_is_normalized_as_upstream()
    {
        var t5 = T5SentencePieceTokenizer.FromModel(Path.Combine(AppContext.BaseDirectory, "Tokenizers", "t5", "spiece.model"));
        var joined = t5.Encode("ab cd");
        var glued = t5.Encode("abcd");
        int checkedCount = 0;
        foreach (var cp in Dropped)
        {
            Assert.True(glued.SequenceEqual(t5.Encode($"ab{char.ConvertFromUtf32(cp)}cd")), $"U+{cp:X4} must be dropped");
            checkedCount++;
        }
        foreach (var cp in ToSpace)
        {
            Assert.True(joined.SequenceEqual(t5.Encode($"ab{char.ConvertFromUtf32(cp)}cd")), $"U+{cp:X4} must become a space");
            checkedCount++;
        }
        foreach (var cp in Kept)
        {
            string c = char.ConvertFromUtf32(cp);
            var ids = t5.Encode($"ab{c}cd");
            // Kept characters stay inside their word, white space (U+0085, U+180E) included: the fast tokenizer's
            // Metaspace splits on U+0020 only (NormalizerOracleTests checks this against the Rust library).
            Assert.False(glued.SequenceEqual(ids), $"U+{cp:X4} has no rule: it must not vanish");
            if (cp != ' ') Assert.False(joined.SequenceEqual(ids), $"U+{cp:X4} has no rule: it must not split the words");
            checkedCount++;
        }
        output.WriteLine($"{checkedCount} characters: {Dropped.Length} dropped, {ToSpace.Length} spaced, {Kept.Length} kept");
        // The issue's case: a vertical tab is dropped, not an <unk>.
        Assert.DoesNotContain(2L, t5.Encode("a\vb"));
    }
}
