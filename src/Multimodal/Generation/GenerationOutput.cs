using static TorchSharp.torch;

namespace Multimodal.Generation;

/// <summary>Why a row stopped generating.</summary>
public enum FinishReason
{
    /// <summary>The model produced an end-of-sequence id.</summary>
    EndOfSequence,

    /// <summary>The new-token limit was reached: the text may be cut.</summary>
    Length,

    /// <summary>The decoded text reached one of <see cref="GenerationOptions.StopStrings"/>.</summary>
    StopString,

    /// <summary>The caller cancelled; the text is what was generated until then (streaming only).</summary>
    Cancelled,
}

/// <summary>The one mapping of <see cref="FinishReason"/> to the standard abstractions' reason, which the chat clients, the
/// server's responses and batch captioning all report.</summary>
public static class FinishReasons
{
    /// <summary><see cref="FinishReason.Length"/> → length (the text may be cut); every other end → stop.</summary>
    public static Microsoft.Extensions.AI.ChatFinishReason ToChatFinishReason(this FinishReason reason) =>
        reason == FinishReason.Length ? Microsoft.Extensions.AI.ChatFinishReason.Length : Microsoft.Extensions.AI.ChatFinishReason.Stop;
}

/// <summary>The result of one generation call.</summary>
/// <param name="Sequences">(B, L) ids: what upstream's <c>generate()</c> returns (for BLIP-2 with a
/// decoder-only LM: BOS then the new tokens, rows that ended early padded with the pad id).</param>
/// <param name="Scores">one score per row: for beam search upstream's <c>sequences_scores</c> (sum of
/// log-probs / length^length_penalty); otherwise the mean log-probability of the generated tokens
/// under the processed distribution.</param>
/// <param name="StepScores">(B, steps, V) processed scores of every step, when
/// <see cref="GenerationOptions.OutputScores"/>; owned by the output.</param>
/// <param name="FinishReasons">why each row stopped.</param>
/// <param name="NewTokens">per row, how many tokens it generated before it stopped (its end id included,
/// padding not).</param>
public sealed record GenerationOutput(long[][] Sequences, double[] Scores, Tensor? StepScores, FinishReason[] FinishReasons, int[] NewTokens)
    : IDisposable
{
    /// <summary>(B, steps, V) raw logits of every step (before the logits processors; for beam search one row
    /// per beam, B·beams), when <see cref="GenerationOptions.OutputScores"/>; owned by the output.</summary>
    public Tensor? StepLogits { get; init; }

    /// <summary>Per row, the positions the language model read before the first new token (image queries or image tokens
    /// and prompt tokens, padding not counted): the one count every result and usage report uses.</summary>
    public int[] InputTokens { get; init; } = [];

    /// <summary>The sequences as a (B, L) int64 CPU tensor.</summary>
    public Tensor ToTensor()
    {
        long width = Sequences.Length == 0 ? 0 : Sequences[0].Length;
        return tensor(Sequences.SelectMany(s => s).ToArray(), [Sequences.Length, width]);
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        StepScores?.Dispose();
        StepLogits?.Dispose();
    }
}

/// <summary>Generated text, the one result shape of every façade (captioning, VQA, interleaved prompts).</summary>
/// <param name="Text">the new text, special tokens skipped, surrounding whitespace trimmed.</param>
/// <param name="Ids">the ids as upstream's <c>generate()</c> returns them (BLIP-2: BOS or the decoder start,
/// then the new tokens; Flamingo/IDEFICS: prompt and new tokens; padding after an early end).</param>
/// <param name="Score">the sequence score (see <see cref="GenerationOutput.Scores"/>).</param>
/// <param name="FinishReason">why generation stopped; <see cref="FinishReason.Length"/> means the text may be cut.</param>
/// <param name="InputTokens">positions the language model read before the first new token (image
/// queries or image tokens and prompt tokens, padding not counted).</param>
/// <param name="OutputTokens">tokens generated, the end token included.</param>
public sealed record TextResult(string Text, IReadOnlyList<long> Ids, double Score, FinishReason FinishReason, int InputTokens, int OutputTokens)
{
    /// <summary>One result per row of a batched generation. Greedy search and sampling pad a row that finished early for
    /// the steps the others still took (unless it left the batch); a row's result is what it gives alone, so that padding
    /// goes (beam search pads as upstream does, and batches of beams are never formed dynamically).</summary>
    /// <param name="output">the generation.</param>
    /// <param name="tokenizer">decodes the ids.</param>
    /// <param name="beams">whether the generation was a beam search.</param>
    internal static IReadOnlyList<TextResult> FromBatch(GenerationOutput output, Processing.ITextTokenizer tokenizer, bool beams)
    {
        // The longest row ran every step: what precedes its new tokens (BOS, a decoder start, a left-padded prompt) is
        // the same length in every row.
        int prefix = output.Sequences.Max(ids => ids.Length) - output.NewTokens.Max();
        return output.Sequences.Select((ids, i) =>
        {
            IReadOnlyList<long> row = beams ? ids : ids[..(prefix + output.NewTokens[i])];
            return new TextResult(tokenizer.Decode(row).Trim(), row, output.Scores[i], output.FinishReasons[i], output.InputTokens[i], output.NewTokens[i]);
        }).ToList();
    }
}
