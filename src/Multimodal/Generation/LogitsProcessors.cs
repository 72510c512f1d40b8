using Multimodal.Common;

namespace Multimodal.Generation;

/// <summary>transformers v4.45.1 logits processors and warpers (generation/logits_process.py), applied
/// in <c>_get_logits_processor</c>'s order: repetition penalty, min length, min new tokens, then —
/// when sampling — temperature, top-k, top-p.</summary>
internal static class LogitsProcessors
{
    /// <param name="tokens">(N, t) the ids upstream's running <c>input_ids</c> holds: the new ones, preceded
    /// by the prompt's when the prompt is tokens.</param>
    /// <param name="scores">(N, V) float32 scores of the next token.</param>
    /// <param name="options">the options.</param>
    /// <param name="eos">EOS ids.</param>
    /// <param name="minNewTokens">effective minimum of new tokens (min_length already adjusted).</param>
    /// <param name="generated">new tokens so far.</param>
    /// <param name="minTokensToKeep">1, or 2 under beam search (upstream's warper argument).</param>
    public static Tensor Apply(Tensor tokens, Tensor scores, GenerationOptions options, long[] eos, int minNewTokens, int generated, int minTokensToKeep = 1)
    {
        using var scope = NewDisposeScope();
        if (options.RepetitionPenalty != 1.0 && tokens.size(1) > 0)
        {
            // RepetitionPenaltyLogitsProcessor: every id present (once or more) is penalised once.
            var picked = scores.gather(1, tokens);
            picked = where(picked.LessThan(0), picked.Times(options.RepetitionPenalty), picked.Over(options.RepetitionPenalty));
            scores = scores.scatter(1, tokens, picked);
        }
        if (generated < minNewTokens)
        {
            // MinLengthLogitsProcessor / MinNewTokensLengthLogitsProcessor.
            scores = scores.clone();
            foreach (var id in eos) scores[.., id] = double.NegativeInfinity;
        }
        if (options.DoSample)
        {
            if (options.Temperature != 1.0) scores = scores.Over(options.Temperature);
            if (options.TopK > 0)
            {
                long k = Math.Min(Math.Max(options.TopK, minTokensToKeep), scores.size(1));
                var kth = scores.topk((int)k).values.narrow(1, k - 1, 1);
                scores = scores.FillWhere(scores.lt(kth), double.NegativeInfinity);
            }
            if (options.TopP < 1.0)
            {
                var (sorted, order) = scores.sort(-1, descending: false);
                var cumulative = sorted.softmax(-1).cumsum(-1);
                var removeSorted = cumulative.LessOrEqual(1 - options.TopP);
                removeSorted.narrow(1, removeSorted.size(1) - minTokensToKeep, minTokensToKeep).Fill_(false);
                var remove = removeSorted.scatter(1, order, removeSorted);
                scores = scores.FillWhere(remove, double.NegativeInfinity);
            }
        }
        return scores.MoveToOuterDisposeScope();
    }
}
