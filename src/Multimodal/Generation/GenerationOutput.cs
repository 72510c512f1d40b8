using static TorchSharp.torch;

namespace Multimodal.Generation;

/// <summary>The result of one generation call.</summary>
/// <param name="Sequences">(B, L) ids: what upstream's <c>generate()</c> returns (for BLIP-2 with a
/// decoder-only LM: BOS then the new tokens, rows that ended early padded with the pad id).</param>
/// <param name="Scores">one score per row: for beam search upstream's <c>sequences_scores</c> (sum of
/// log-probs / length^length_penalty); otherwise the mean log-probability of the generated tokens
/// under the processed distribution.</param>
/// <param name="StepScores">(B, steps, V) processed scores of every step, when
/// <see cref="GenerationOptions.OutputScores"/>; owned by the output.</param>
public sealed record GenerationOutput(long[][] Sequences, double[] Scores, Tensor? StepScores) : IDisposable
{
    /// <summary>The sequences as a (B, L) int64 CPU tensor.</summary>
    public Tensor ToTensor()
    {
        long width = Sequences.Length == 0 ? 0 : Sequences[0].Length;
        return tensor(Sequences.SelectMany(s => s).ToArray(), [Sequences.Length, width]);
    }

    /// <inheritdoc/>
    public void Dispose() => StepScores?.Dispose();
}
