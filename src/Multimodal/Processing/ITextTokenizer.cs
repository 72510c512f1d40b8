namespace Multimodal.Processing;

/// <summary>A checkpoint's tokenizer: text ↔ ids exactly as the upstream (fast) tokenizer the Python
/// processors load.</summary>
public interface ITextTokenizer
{
    /// <summary>Text → ids; with <paramref name="addSpecialTokens"/> the ids the upstream tokenizer adds
    /// (OPT: a leading <c>&lt;/s&gt;</c> as BOS).</summary>
    IReadOnlyList<long> Encode(string text, bool addSpecialTokens = true);

    /// <summary>Ids → text; special tokens are left out when <paramref name="skipSpecialTokens"/>.</summary>
    string Decode(IEnumerable<long> ids, bool skipSpecialTokens = true);

    /// <summary>A decoder that turns ids into text one token at a time, never splitting a character.</summary>
    IStreamingDecoder CreateStreamingDecoder(bool skipSpecialTokens = true);

    /// <summary>Ids that are special tokens (dropped by <see cref="Decode"/> when skipping).</summary>
    IReadOnlySet<long> SpecialIds { get; }

    /// <summary>Padding id, when the tokenizer has one.</summary>
    long? PadTokenId { get; }

    /// <summary>The most UTF-8 bytes one token stands for (its vocabulary's longest entry): a text of more than
    /// positions × this many bytes cannot fit a model's positions, whatever it holds, so it is refused before it is
    /// tokenized (<see cref="TextLimit"/>).</summary>
    int LongestTokenBytes { get; }
}

/// <summary>Incremental detokenization: feed ids as they are generated, get the new text each one
/// completes. Bytes of a character split across tokens are held back until the character is whole.</summary>
public interface IStreamingDecoder
{
    /// <summary>Adds one id and returns the text it completes (possibly empty).</summary>
    string Push(long id);

    /// <summary>Returns what is still held back (an incomplete character becomes U+FFFD, as upstream's
    /// <c>errors="replace"</c> does).</summary>
    string Flush();
}
