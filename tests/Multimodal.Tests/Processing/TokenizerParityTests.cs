using System.Text;
using System.Text.Json;
using Multimodal.Processing;
using Xunit.Abstractions;

namespace Multimodal.Tests.Processing;

/// <summary>The OPT tokenizer of BLIP-2 checkpoints against the ids and text the upstream fast tokenizer
/// gives for 47 tricky strings (Tokenizers/reference_fast.json; see Tokenizers/SOURCES.md).</summary>
public sealed class TokenizerParityTests(ITestOutputHelper output)
{
    private static readonly string Root = Path.Combine(AppContext.BaseDirectory, "Tokenizers");
    private static readonly Lazy<Gpt2Tokenizer> Opt = new(() => Gpt2Tokenizer.FromFolder(Path.Combine(Root, "opt")));

    // How each reference tokenizer is built from its files (reference_fast.json says what upstream loads).
    private static readonly Dictionary<string, Lazy<ITextTokenizer>> Tokenizers = new()
    {
        ["opt"] = new(() => Opt.Value),
        ["gpt-neox-20b"] = new(() => Gpt2Tokenizer.FromTokenizerJson(Path.Combine(Root, "gpt-neox-20b", "tokenizer.json"),
            ["<|endofchunk|>", "<image>", "<PAD>"], padToken: "<PAD>")),
        ["llama"] = new(() => LlamaSentencePieceTokenizer.FromModel(Path.Combine(Root, "llama", "tokenizer.model"))),
        ["t5"] = new(() => T5SentencePieceTokenizer.FromModel(Path.Combine(Root, "t5", "spiece.model"))),
        ["bert"] = new(() => BertWordPieceTokenizer.FromVocab(Path.Combine(Root, "bert", "vocab.txt"))),
        ["bert-lavis"] = new(() => BertWordPieceTokenizer.FromVocab(Path.Combine(Root, "bert", "vocab.txt"), ["[DEC]"])),
    };

    public static TheoryData<string, string> ReferenceCases()
    {
        var data = new TheoryData<string, string>();
        foreach (var name in Tokenizers.Keys)
            foreach (var c in Cases(name)) data.Add(name, c.GetProperty("id").GetString()!);
        return data;
    }

    private static IEnumerable<JsonElement> Cases(string tokenizer)
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(Root, "reference_fast.json")));
        return doc.RootElement.GetProperty("tokenizers").EnumerateArray()
            .Single(t => t.GetProperty("name").GetString() == tokenizer)
            .GetProperty("cases").EnumerateArray().Select(c => c.Clone()).ToList();
    }

    private static long[] Ids(JsonElement c, string key) => c.GetProperty(key).EnumerateArray().Select(e => e.GetInt64()).ToArray();

    [Theory]
    [MemberData(nameof(ReferenceCases))]
    public void Ids_and_text_equal_the_upstream_fast_tokenizer(string tokenizerName, string caseId)
    {
        var c = Cases(tokenizerName).Single(x => x.GetProperty("id").GetString() == caseId);
        string text = c.GetProperty("text").GetString()!;
        var tokenizer = Tokenizers[tokenizerName].Value;
        Assert.Equal(Ids(c, "ids"), tokenizer.Encode(text));
        Assert.Equal(Ids(c, "ids_no_special"), tokenizer.Encode(text, addSpecialTokens: false));
        string expected = c.GetProperty("decoded").GetString()!;
        Assert.Equal(expected, tokenizer.Decode(Ids(c, "ids")));

        var streaming = tokenizer.CreateStreamingDecoder();
        var pieces = new StringBuilder();
        foreach (var id in Ids(c, "ids"))
        {
            var piece = streaming.Push(id);
            Assert.DoesNotContain('\uFFFD', piece); // never a broken character mid-stream
            pieces.Append(piece);
        }
        pieces.Append(streaming.Flush());
        Assert.Equal(expected, pieces.ToString());
        output.WriteLine($"{tokenizerName}/{caseId}: {Ids(c, "ids").Length} ids equal, text equal (also streamed)");
    }

    [Fact]
    public void The_blip2_image_token_is_one_special_id()
    {
        var tokenizer = Opt.Value;
        Assert.Equal([2L, 50265, 50265, 102], tokenizer.Encode("<image><image>a"));
        Assert.Contains(50265L, tokenizer.SpecialIds);
        Assert.Equal(1L, tokenizer.PadTokenId);
    }

    [Fact]
    public void A_missing_tokenizer_file_is_named()
    {
        var e = Assert.Throws<FileNotFoundException>(() => Gpt2Tokenizer.FromFolder(AppContext.BaseDirectory));
        Assert.Contains("vocab.json", e.Message);
    }
}
