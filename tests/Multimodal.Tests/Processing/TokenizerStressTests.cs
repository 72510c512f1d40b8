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

/// <summary>BERT's lowercasing is Python's <c>str.lower()</c> (then NFD and accent stripping), as the slow
/// BertTokenizer applies it; the expected strings are what CPython's <c>str.lower</c> returns (full case
/// mapping: U+0130 → "i" + U+0307; Final_Sigma: Σ after a cased letter and before none → ς).</summary>
public sealed class BertLowercaseTests
{
    [Theory]
    [InlineData("\u0130stanbul", "i\u0307stanbul")]
    [InlineData("ΟΔΟΣ", "οδος")]
    [InlineData("ΣΑΣ ΟΣ.", "σας ος.")]
    [InlineData("Σ", "σ")]
    [InlineData("AΣB", "aσb")]
    [InlineData("ΌΣ'", "ός'")]   // the apostrophe is case-ignorable, so Σ is still final
    [InlineData("ǅ ẞ Ω", "ǆ ß ω")]
    public void Lowercasing_is_pythons(string text, string expected) =>
        Assert.Equal(expected, BertWordPieceTokenizer.PythonLower(text));

    [Fact]
    public void Dotted_capital_i_is_no_longer_unknown()
    {
        var bert = BertWordPieceTokenizer.FromVocab(Path.Combine(AppContext.BaseDirectory, "Tokenizers", "bert", "vocab.txt"));
        // bert-base-uncased: [CLS] = 101, "istanbul" = 9960, [SEP] = 102 (line numbers of vocab.txt minus one).
        Assert.Equal([101L, 9960, 102], bert.Encode("\u0130stanbul"));
        // "ΟΔΟΣ" lowers to "οδος" with the final ς (vocab "##ς" = 19579), never the medial σ ("##σ" = 29733).
        var greek = bert.Encode("ΟΔΟΣ");
        Assert.DoesNotContain(29733L, greek);
    }
}
