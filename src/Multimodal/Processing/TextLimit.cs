using System.Text;

namespace Multimodal.Processing;

/// <summary>The cost bound on a prompt's text, checked before it is tokenized: a model with P positions cannot take a
/// text of more than P × the tokenizer's longest token in UTF-8 bytes, so such a text is refused in the time it takes
/// to count its bytes instead of after tokenizing megabytes.</summary>
/// <remarks>Tokenizers that fuse a run of unknown characters into one <c>[UNK]</c> (BERT, T5) could squeeze a longer
/// text of such characters into fewer tokens; those texts are refused too, by design.</remarks>
public static class TextLimit
{
    /// <summary>Positions assumed for a model whose config names no position limit (T5's relative positions): the
    /// <c>model_max_length</c> of T5's tokenizers.</summary>
    public const int DefaultPositions = 512;

    /// <summary>The most UTF-8 bytes a text may have for <paramref name="positions"/> positions.</summary>
    public static long MaxBytes(int positions, ITextTokenizer tokenizer) =>
        checked((long)Math.Max(positions, 1) * Math.Max(tokenizer.LongestTokenBytes, 1));

    /// <summary>Refuses <paramref name="text"/> when it is longer than <see cref="MaxBytes"/> allows.</summary>
    /// <param name="text">the text about to be tokenized.</param>
    /// <param name="positions">the model's positions (its context length).</param>
    /// <param name="tokenizer">the tokenizer that will read it.</param>
    /// <param name="what">what the text is, for the message ("The prompt").</param>
    /// <exception cref="ArgumentException">the text is longer than the positions can hold.</exception>
    public static void Check(string text, int positions, ITextTokenizer tokenizer, string what = "The prompt")
    {
        ArgumentNullException.ThrowIfNull(text);
        long max = MaxBytes(positions, tokenizer);
        if (text.Length * 3L <= max) return;                 // a UTF-16 unit is at most 3 UTF-8 bytes
        long bytes = Encoding.UTF8.GetByteCount(text);
        if (bytes > max)
            throw new ArgumentException($"{what} is {bytes} bytes of text; this model's {positions} positions hold at most {max} " +
                                        $"(its longest token is {tokenizer.LongestTokenBytes} bytes).");
    }
}
