using System.Text;
using System.Text.Json;
using Multimodal.Processing;
using Multimodal.Tests.TestSupport;
using Xunit.Abstractions;

namespace Multimodal.Tests.Processing;

/// <summary>Stress strings derived from the rules of the fast tokenizers' normalizers and pre-tokenizers — T5's
/// <c>Precompiled</c> charsmap (per grapheme, whole when under 6 bytes), its right strip, space-run replace and
/// <c>Metaspace</c> split (on U+0020 only); BERT's <c>BertNormalizer</c> (control, format, unassigned, private-use and
/// surrogate code points dropped, whitespace to spaces, CJK spaced, accents stripped, lower case) and
/// <c>BertPreTokenizer</c> (whitespace and punctuation) — each checked against the Rust tokenizers library itself
/// (Tokenizers.DotNet wraps it) on T5 v1.1's tokenizer.json and on a bert-base-uncased tokenizer.json built as
/// transformers' BertConverter builds it.</summary>
public sealed class NormalizerOracleTests(ITestOutputHelper output) : IDisposable
{
    private static readonly string Root = Path.Combine(AppContext.BaseDirectory, "Tokenizers");
    private readonly TempDir _temp = new();

    public void Dispose() => _temp.Dispose();

    // Every code point Unicode calls white space, and the separators and format characters next to them.
    private static readonly int[] Spaces =
    [
        0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x1C, 0x1D, 0x1E, 0x1F, 0x20, 0x85, 0xA0, 0x1680, 0x180E, .. Enumerable.Range(0x2000, 14),
        0x2028, 0x2029, 0x202F, 0x205F, 0x2060, 0x3000, 0xFEFF,
    ];

    private static readonly int[] Marks = [0x0300, 0x0301, 0x0308, 0x0323, 0x0345, 0x05B4, 0x0E31, 0x20D7, 0xFE20, 0x1AB0, 0x1DC0, 0x0F71];

    private static readonly string[] Bases = ["a", "e", "A", "\uFF45", "1", " ", "\u3131", "\uAC00", "\u0627", "\u0915", "\u00E9", "\u212B", "\uFB01"];

    private static string S(params int[] cps) => string.Concat(cps.Select(char.ConvertFromUtf32));

    /// <summary>Separators, controls and combining-mark stacks in every position a split or a grapheme rule can see.</summary>
    public static IEnumerable<string> SeparatorAndMarkStrings()
    {
        foreach (int w in Spaces.Concat(Enumerable.Range(0, 0x20)).Concat(Enumerable.Range(0x7F, 0x21)).Distinct())
        {
            string c = S(w);
            foreach (var t in new[] { $"a{c}b", $"{c}ab", $"ab{c}", $"a{c}{c}b", $"a {c} b", $"word{c}{c}{c}", $"{c} {c}x" }) yield return t;
        }
        foreach (var b in Bases)
            foreach (int mark in Marks)
                for (int n = 1; n <= 7; n++)
                {
                    string stack = b + string.Concat(Enumerable.Repeat(S(mark), n));
                    yield return stack;
                    yield return "x " + stack + " y";
                    yield return "x" + stack + "y";
                }
        // Mixed stacks (canonical reordering inside NFKC) and marks after separators.
        yield return "a" + S(0x0323, 0x0301, 0x0308);
        yield return "a" + S(0x0301, 0x0323, 0x0308, 0x0345, 0x05B4);
        foreach (int w in new[] { 0x20, 0x2028, 0x2029, 0x85, 0x3000, 0x0A })
            yield return "a" + S(w, 0x0301, 0x0301, 0x0301) + "b";
    }

    /// <summary>Emoji sequences (tags after a flag, ZWJ, skin tones, variation selectors, keycaps), format, unassigned
    /// and private-use code points, and every punctuation and symbol category, between words.</summary>
    public static IEnumerable<string> EmojiAndCategoryStrings()
    {
        string england = S(0x1F3F4, 0xE0067, 0xE0062, 0xE0065, 0xE006E, 0xE0067, 0xE007F);
        string scotland = S(0x1F3F4, 0xE0067, 0xE0062, 0xE0073, 0xE0063, 0xE0074, 0xE007F);
        string[] sequences =
        [
            england, scotland, S(0x1F3F4, 0xE0020, 0xE007E, 0xE007F), S(0xE0001, 0xE0065, 0xE006E),
            S(0x1F468, 0x200D, 0x1F469, 0x200D, 0x1F467), S(0x1F44D, 0x1F3FD), S(0x2764, 0xFE0F), S(0x0031, 0xFE0F, 0x20E3),
            S(0x1F1EC, 0x1F1E7), S(0x00AD), S(0x061C), S(0x200B), S(0x200C), S(0x200D), S(0xFFFD), S(0xFFFE), S(0x2FFFF),
            S(0x0378), S(0xE0080), S(0xE000), S(0xF0000), S(0x1FAE8), S(0x1F9CC), S(0x31350),
        ];
        foreach (var seq in sequences)
            foreach (var t in new[] { seq, $"I {seq} you", $"a{seq}b", $"{seq}{seq}", $"Hello{seq}, world{seq}!" }) yield return t;
        foreach (int cp in new[] { 0x5F, 0x2010, 0x2E3A, 0x300C, 0x300D, 0x00AB, 0x00BB, 0x2018, 0x2019, 0x00A1, 0x00BF, 0x2030, 0x055C,
                     0x2192, 0x20AC, 0x02C6, 0x00A9, 0x2122, 0x1F600, 0x60, 0x7E, 0x5E, 0x24, 0x3C, 0x3E, 0x7C, 0xFF01, 0xFF5E, 0x3001, 0x30FB })
            yield return $"x{S(cp)}y z{S(cp)}{S(cp)}";
        yield return "\u4E2D\u6587a\u3042\uAC00\u0E01\u0E34";
        yield return "İstanbul ΣΑΣ ǅ ß ẞ ﬀ ΐ";
    }

    private static Tokenizers.DotNet.Tokenizer Oracle(string path) => new(path);

    /// <summary>bert-base-uncased's fast tokenizer as transformers' BertConverter writes it (LAVIS' [DEC] as one more
    /// special token when the vocabulary has it).</summary>
    private string BertTokenizerJson(string vocabPath)
    {
        var vocab = File.ReadAllLines(vocabPath).Select((token, id) => (token, id)).ToDictionary(p => p.token, p => p.id);
        var special = new[] { "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]" }.Where(vocab.ContainsKey).ToArray();
        var json = new
        {
            version = "1.0",
            added_tokens = special.Select(t => new { id = vocab[t], content = t, single_word = false, lstrip = false, rstrip = false, normalized = false, special = true }),
            normalizer = new { type = "BertNormalizer", clean_text = true, handle_chinese_chars = true, strip_accents = (bool?)null, lowercase = true },
            pre_tokenizer = new { type = "BertPreTokenizer" },
            post_processor = new
            {
                type = "TemplateProcessing",
                single = new object[] { new { SpecialToken = new { id = "[CLS]", type_id = 0 } }, new { Sequence = new { id = "A", type_id = 0 } }, new { SpecialToken = new { id = "[SEP]", type_id = 0 } } },
                pair = new object[] { new { Sequence = new { id = "A", type_id = 0 } } },
                special_tokens = new Dictionary<string, object>
                {
                    ["[CLS]"] = new { id = "[CLS]", ids = new[] { vocab["[CLS]"] }, tokens = new[] { "[CLS]" } },
                    ["[SEP]"] = new { id = "[SEP]", ids = new[] { vocab["[SEP]"] }, tokens = new[] { "[SEP]" } },
                },
            },
            decoder = new { type = "WordPiece", prefix = "##", cleanup = true },
            model = new { type = "WordPiece", unk_token = "[UNK]", continuing_subword_prefix = "##", max_input_chars_per_word = 100, vocab },
        };
        string path = Path.Combine(_temp.Path, Path.GetFileNameWithoutExtension(vocabPath) + "-tokenizer.json");
        File.WriteAllText(path, JsonSerializer.Serialize(json));
        return path;
    }

    private void Compare(string name, ITextTokenizer ours, Tokenizers.DotNet.Tokenizer oracle, IEnumerable<string> strings)
    {
        int count = 0;
        var differ = new List<string>();
        foreach (var text in strings)
        {
            count++;
            var expected = oracle.Encode(text).Select(i => (long)i).ToArray();
            var actual = ours.Encode(text).ToArray();
            if (!expected.SequenceEqual(actual))
                differ.Add($"{Escape(text)}: expected {string.Join(",", expected)} actual {string.Join(",", actual)}");
        }
        output.WriteLine($"{name}: {count - differ.Count}/{count} agree with the Rust tokenizers library");
        foreach (var d in differ.Take(40)) output.WriteLine("  " + d);
        Assert.True(differ.Count == 0, $"{name}: {differ.Count} of {count} strings differ");
    }

    private static string Escape(string text) =>
        string.Concat(text.EnumerateRunes().Select(r => r.Value is >= 0x21 and < 0x7F ? r.ToString() : $"<U+{r.Value:X4}>"));

    [Fact]
    public void T5_agrees_with_the_fast_tokenizer_on_separators_controls_and_mark_stacks()
    {
        var t5 = T5SentencePieceTokenizer.FromModel(Path.Combine(Root, "t5", "spiece.model"));
        Compare("t5", t5, Oracle(Path.Combine(Root, "t5", "tokenizer.json")), SeparatorAndMarkStrings().Concat(EmojiAndCategoryStrings()));
    }

    [Fact]
    public void Bert_agrees_with_the_fast_tokenizer_on_emoji_sequences_categories_and_separators()
    {
        string vocab = Path.Combine(Root, "bert", "vocab.txt");
        Compare("bert", BertWordPieceTokenizer.FromVocab(vocab), Oracle(BertTokenizerJson(vocab)),
            EmojiAndCategoryStrings().Concat(SeparatorAndMarkStrings()));
        // LAVIS' vocabulary: [DEC] appended as 30522.
        string lavis = Path.Combine(_temp.Path, "vocab-lavis.txt");
        File.WriteAllLines(lavis, File.ReadAllLines(vocab).Append("[DEC]"));
        Compare("bert-lavis", BertWordPieceTokenizer.FromVocab(vocab, ["[DEC]"]), Oracle(BertTokenizerJson(lavis)),
            EmojiAndCategoryStrings().Select(t => t + " [DEC]"));
    }

    /// <summary>.NET strings can hold what no Rust string can: an unpaired surrogate (a JSON body may escape one). Each
    /// tokenizer reads it as U+FFFD, as UTF-8 encoding would, instead of throwing from .NET's normalization.</summary>
    [Fact]
    public void Unpaired_surrogates_read_as_the_replacement_character()
    {
        ITextTokenizer[] tokenizers =
        [
            BertWordPieceTokenizer.FromVocab(Path.Combine(Root, "bert", "vocab.txt")),
            T5SentencePieceTokenizer.FromModel(Path.Combine(Root, "t5", "spiece.model")),
            Gpt2Tokenizer.FromTokenizerJson(Path.Combine(Root, "gpt-neox-20b", "tokenizer.json")),
            LlamaSentencePieceTokenizer.FromModel(Path.Combine(Root, "llama", "tokenizer.model")),
        ];
        foreach (var tokenizer in tokenizers)
            foreach (var lone in new[] { "\uD800", "\uDC00", "\uDBFF\uDBFF" })
                Assert.Equal(tokenizer.Encode("Hello " + new string('\uFFFD', lone.Length) + "\u0301 world\uFFFE"),
                    tokenizer.Encode("Hello " + lone + "\u0301 world\uFFFE"));
    }

    /// <summary>Every code point (surrogates aside), inside a word and alone: each category and range rule is met by
    /// every character it covers, including those assigned after the Rust library's tables were made. GPT-NeoX's NFC
    /// too, with the stress strings.</summary>
    [Fact]
    public void Both_agree_with_the_fast_tokenizers_on_every_code_point()
    {
        string vocab = Path.Combine(Root, "bert", "vocab.txt");
        var bert = BertWordPieceTokenizer.FromVocab(vocab);
        var t5 = T5SentencePieceTokenizer.FromModel(Path.Combine(Root, "t5", "spiece.model"));
        var strings = Enumerable.Range(0, 0x110000).Where(cp => cp is < 0xD800 or > 0xDFFF)
            .Select(cp => "a" + char.ConvertFromUtf32(cp) + "b " + char.ConvertFromUtf32(cp)).ToList();
        Compare("bert, every code point", bert, Oracle(BertTokenizerJson(vocab)), strings);
        Compare("t5, every code point", t5, Oracle(Path.Combine(Root, "t5", "tokenizer.json")), strings);
        // GPT-NeoX (every OpenFlamingo language model): NFC, then byte-level BPE.
        string neox = Path.Combine(Root, "gpt-neox-20b", "tokenizer.json");
        Compare("gpt-neox, every code point", Gpt2Tokenizer.FromTokenizerJson(neox), Oracle(neox),
            strings.Concat(SeparatorAndMarkStrings()).Concat(EmojiAndCategoryStrings()));
    }
}
