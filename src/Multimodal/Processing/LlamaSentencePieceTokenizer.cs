using Microsoft.ML.Tokenizers;

namespace Multimodal.Processing;

/// <summary>transformers v4.45.1 <c>LlamaTokenizerFast</c> (legacy mode, as LLaMA v1/v2 and IDEFICS ship it)
/// on Microsoft.ML.Tokenizers' SentencePiece BPE: BOS <c>&lt;s&gt;</c> prepended, special and added tokens
/// (<c>&lt;/s&gt;</c>, IDEFICS' <c>&lt;fake_token_around_image&gt;</c> and <c>&lt;image&gt;</c>) matched whole,
/// and — the legacy behaviour — every text segment after one gets its own "▁" prefix.</summary>
public sealed class LlamaSentencePieceTokenizer : ITextTokenizer
{
    private readonly LlamaTokenizer _sp;
    private readonly SentencePieceBpe _encoder;
    private readonly Dictionary<string, int> _added;
    private readonly Dictionary<long, string> _addedById;

    /// <inheritdoc/>
    public IReadOnlySet<long> SpecialIds { get; }

    /// <inheritdoc/>
    public long? PadTokenId { get; }

    /// <inheritdoc/>
    public int LongestTokenBytes => _longest ??= _sp.Vocabulary.Keys.Concat(_added.Keys).Max(System.Text.Encoding.UTF8.GetByteCount);
    private int? _longest;

    /// <summary>BOS id.</summary>
    public long BosTokenId { get; }

    private LlamaSentencePieceTokenizer(LlamaTokenizer sp, SentencePieceBpe encoder, Dictionary<string, int> added, long? pad, string bosToken)
    {
        _sp = sp;
        _encoder = encoder;
        _added = added;
        _addedById = added.ToDictionary(kv => (long)kv.Value, kv => kv.Key);
        SpecialIds = added.Values.Select(v => (long)v).ToHashSet();
        BosTokenId = added.TryGetValue(bosToken, out var bos) ? bos
            : throw new InvalidDataException($"bos_token \"{bosToken}\" is not a token of this tokenizer.");
        PadTokenId = pad;
    }

    /// <summary>Reads <c>tokenizer.model</c>; <paramref name="additionalTokens"/> are appended after the
    /// vocabulary (IDEFICS: <c>&lt;fake_token_around_image&gt;</c> = 32000, <c>&lt;image&gt;</c> = 32001);
    /// <paramref name="bosToken"/> is the token prepended to every prompt (InstructBLIP's Vicuna tokenizer uses &lt;/s&gt;).</summary>
    public static LlamaSentencePieceTokenizer FromModel(string path, IReadOnlyList<string>? additionalTokens = null, string? padToken = null,
        string bosToken = "<s>")
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"SentencePiece model '{path}' does not exist.", path);
        var specials = new Dictionary<string, int> { ["<unk>"] = 0, ["<s>"] = 1, ["</s>"] = 2 };
        LlamaTokenizer sp;
        SentencePieceBpe encoder;
        var bytes = File.ReadAllBytes(path);
        try
        {
            using var stream = new MemoryStream(bytes);
            sp = LlamaTokenizer.Create(stream, addBeginOfSentence: false, addEndOfSentence: false, specialTokens: specials);
            encoder = new SentencePieceBpe(bytes);
        }
        catch (Exception e) when (e is not IOException)
        {
            throw new InvalidDataException($"'{path}' is not a SentencePiece BPE model: {e.Message}", e);
        }
        var added = new Dictionary<string, int>(specials);
        int next = sp.Vocabulary.Count;
        foreach (var token in additionalTokens ?? [])
            added.TryAdd(token, next++);
        long? pad = padToken is not null && added.TryGetValue(padToken, out var p) ? p : null;
        return new LlamaSentencePieceTokenizer(sp, encoder, added, pad, bosToken);
    }

    internal SentencePieceBpe Encoder => _encoder;

    /// <inheritdoc/>
    public IReadOnlyList<long> Encode(string text, bool addSpecialTokens = true)
    {
        ArgumentNullException.ThrowIfNull(text);
        text = UnicodeText.WithoutLoneSurrogates(text);
        var ids = new List<long>();
        if (addSpecialTokens) ids.Add(BosTokenId);
        foreach (var (segment, id) in AddedTokens.Split(text, _added))
        {
            if (id is int added) ids.Add(added);
            else ids.AddRange(_encoder.Encode(segment).Select(i => (long)i));
        }
        return ids;
    }

    /// <inheritdoc/>
    public string Decode(IEnumerable<long> ids, bool skipSpecialTokens = true)
    {
        // SentencePiece joins the pieces and drops the first "▁" of the whole text: decode the ids as one
        // run (special tokens left out), not token by token.
        if (skipSpecialTokens) return _sp.Decode(ids.Where(id => !_addedById.ContainsKey(id)).Select(id => (int)id));
        var text = new System.Text.StringBuilder();
        var run = new List<int>();
        foreach (var id in ids)
        {
            if (_addedById.TryGetValue(id, out var added))
            {
                text.Append(_sp.Decode(run)).Append(added);
                run.Clear();
            }
            else run.Add((int)id);
        }
        return text.Append(_sp.Decode(run)).ToString();
    }

    /// <inheritdoc/>
    public IStreamingDecoder CreateStreamingDecoder(bool skipSpecialTokens = true) =>
        new SentencePieceStreamingDecoder(_sp, _addedById, skipSpecialTokens);
}

/// <summary>Incremental decoding for SentencePiece models. Decoding a piece alone would drop its leading
/// "▁" (SentencePiece strips the text's first one): after the first piece, each new piece is decoded
/// behind a fixed anchor piece and only what follows the anchor is kept; pieces are held back while the
/// bytes of a character are incomplete (byte-fallback tokens).</summary>
internal sealed class SentencePieceStreamingDecoder(SentencePieceTokenizer sp, IReadOnlyDictionary<long, string> added, bool skipSpecial) : IStreamingDecoder
{
    private readonly List<int> _pending = [];
    private readonly int _anchor = sp.EncodeToIds("a", addBeginningOfSentence: false, addEndOfSentence: false)[^1];
    private bool _started;

    public string Push(long id)
    {
        if (added.TryGetValue(id, out var text))
            return skipSpecial ? "" : Flush() + text;
        _pending.Add((int)id);
        string rendered = Render();
        if (rendered.EndsWith('\uFFFD')) return "";
        _pending.Clear();
        _started = true;
        return rendered;
    }

    public string Flush()
    {
        if (_pending.Count == 0) return "";
        var rendered = Render();
        _pending.Clear();
        return rendered;
    }

    private string Render()
    {
        if (!_started) return sp.Decode(_pending);
        string anchor = sp.Decode([_anchor]);
        string text = sp.Decode(_pending.Prepend(_anchor));
        return text.StartsWith(anchor, StringComparison.Ordinal) ? text[anchor.Length..] : text;
    }
}
