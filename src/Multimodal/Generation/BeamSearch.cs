using Multimodal.Common;

namespace Multimodal.Generation;

/// <summary>transformers v4.45.1 <c>BeamHypotheses</c> (generation/beam_search.py): the n best finished
/// hypotheses of one row, scored sum(log p) / length^length_penalty.</summary>
internal sealed class BeamHypotheses(int numBeams, double lengthPenalty, BeamEarlyStopping earlyStopping, int maxLength)
{
    private readonly List<(double Score, long[] Tokens, bool Ended)> _beams = [];
    private double _worstScore = 1e9;

    public IReadOnlyList<(double Score, long[] Tokens, bool Ended)> Beams => _beams;

    /// <param name="tokens">the hypothesis without its end id.</param>
    /// <param name="sumLogProbs">its beam score.</param>
    /// <param name="generatedLength">the length its score is normalised by.</param>
    /// <param name="ended">whether it ended with an end id (false: still open when the search stopped).</param>
    public void Add(long[] tokens, double sumLogProbs, int generatedLength, bool ended)
    {
        double score = sumLogProbs / Math.Pow(generatedLength, lengthPenalty);
        if (_beams.Count < numBeams || score > _worstScore)
        {
            _beams.Add((score, tokens, ended));
            if (_beams.Count > numBeams)
            {
                // Drop the worst; ties go to the earlier entry, as Python's sort of (score, index) does.
                var order = _beams.Select((b, i) => (b.Score, i)).OrderBy(x => x.Score).ThenBy(x => x.i).ToList();
                _beams.RemoveAt(order[0].i);
                _worstScore = order[1].Score;
            }
            else
            {
                _worstScore = Math.Min(score, _worstScore);
            }
        }
    }

    /// <summary>Whether no open beam can still enter the list.</summary>
    public bool IsDone(double bestSumLogProbs, int currentLength)
    {
        if (_beams.Count < numBeams) return false;
        switch (earlyStopping)
        {
            case BeamEarlyStopping.Immediate:
                return true;
            case BeamEarlyStopping.Heuristic:
                return _worstScore >= bestSumLogProbs / Math.Pow(currentLength, lengthPenalty);
            default:
                int length = lengthPenalty > 0 ? maxLength : currentLength;
                return _worstScore >= bestSumLogProbs / Math.Pow(length, lengthPenalty);
        }
    }
}

/// <summary>Beam search, transformers v4.45.1 <c>GenerationMixin._beam_search</c> with
/// <c>BeamSearchScorer</c>: each row keeps <c>num_beams</c> open beams; candidates are the top
/// max(2, 1 + #eos)·num_beams of log-softmax + processors + beam score; a candidate ending in EOS
/// within the top num_beams becomes a finished hypothesis; at the end the open beams are added too
/// and the best hypothesis is returned, EOS appended where it is shorter than the longest.</summary>
internal static class BeamSearch
{
    public static GenerationOutput Run(GenerationRequest request)
    {
        var options = request.Options;
        int nb = options.NumBeams;
        using var outer = NewDisposeScope();
        int batch = (int)request.PromptEmbeds.shape[0];
        int rowsTotal = batch * nb;
        var device = request.PromptEmbeds.device;
        using var cache = options.UseCache ? request.Model.NewCache() : null;
        var embeds = request.PromptEmbeds.repeat_interleave(nb, 0);                     // (B·nb, T, E)
        var mask = request.PromptMask.repeat_interleave(nb, 0);                         // (B·nb, T)
        var promptIds = request.PromptIds?.repeat_interleave(nb, 0);                    // (B·nb, T) or null
        var beamScores = zeros(batch, nb, ScalarType.Float32, device);
        beamScores[.., 1..] = -1e9;                                                    // only beam 0 is live at first
        beamScores = beamScores.view(-1);
        var tokens = empty(rowsTotal, 0, ScalarType.Int64, device);
        var hypotheses = Enumerable.Range(0, batch)
            .Select(_ => new BeamHypotheses(nb, options.LengthPenalty, options.EarlyStopping, request.MaxNewTokens)).ToArray();
        var done = new bool[batch];
        var stepScores = new List<Tensor>();
        var stepLogits = new List<Tensor>();
        int keep = Math.Max(2, 1 + request.Eos.Length) * nb;
        for (int step = 0; step < request.MaxNewTokens; step++)
        {
            request.Cancel.ThrowIfCancellationRequested();
            using var scope = NewDisposeScope();
            var logits = request.NextLogits(embeds, mask, tokens, cache, promptIds);
            var processed = LogitsProcessors.Apply(GenerationRequest.PenaltyIds(promptIds, tokens), logits.log_softmax(-1), options,
                request.Eos, request.MinNewTokens, generated: step, minTokensToKeep: 2);
            if (options.OutputScores)
            {
                stepScores.Add(processed.cpu().MoveToOuterDisposeScope());
                stepLogits.Add(logits.cpu().MoveToOuterDisposeScope());
            }
            long vocab = processed.shape[1];
            var total = processed.Plus(beamScores.unsqueeze(1)).view(batch, nb * vocab);
            var (topScores, topIndex) = total.topk(keep, 1, largest: true, sorted: true);
            var candScores = topScores.cpu().data<float>().ToArray();
            var candIndex = topIndex.cpu().data<long>().ToArray();
            var tokenRows = tokens.cpu();
            int currentLength = step + 1;

            var nextScores = new float[rowsTotal];
            var nextTokens = new long[rowsTotal];
            var nextRows = new long[rowsTotal];
            for (int b = 0; b < batch; b++)
            {
                if (done[b])
                {
                    // A finished row keeps running on pad tokens (its result is already decided).
                    for (int j = 0; j < nb; j++) { nextTokens[b * nb + j] = request.Pad; nextRows[b * nb + j] = b * nb; }
                    continue;
                }
                int filled = 0;
                for (int rank = 0; rank < keep && filled < nb; rank++)
                {
                    long flat = candIndex[b * keep + rank];
                    long token = flat % vocab;
                    int source = b * nb + (int)(flat / vocab);
                    float score = candScores[b * keep + rank];
                    if (request.Eos.Contains(token))
                    {
                        if (rank >= nb) continue;
                        hypotheses[b].Add(tokenRows[source].data<long>().ToArray(), score, currentLength, ended: true);
                    }
                    else
                    {
                        nextScores[b * nb + filled] = score;
                        nextTokens[b * nb + filled] = token;
                        nextRows[b * nb + filled] = source;
                        filled++;
                    }
                }
                if (filled < nb) throw new InvalidOperationException($"beam search found only {filled} of {nb} continuations for row {b}.");
                done[b] = hypotheses[b].IsDone(candScores[b * keep], currentLength);
            }

            var rowIndex = tensor(nextRows, device: device);
            beamScores = tensor(nextScores, device: device).MoveToOuterDisposeScope();
            tokens = cat([tokens.index_select(0, rowIndex), tensor(nextTokens, device: device).unsqueeze(1)], 1).MoveToOuterDisposeScope();
            mask = cat([mask, ones(rowsTotal, 1, ScalarType.Int64, device)], 1).MoveToOuterDisposeScope();
            cache?.Reorder(rowIndex);
            request.OnTokens?.Invoke(Enumerable.Range(0, batch).Select(b => nextTokens[b * nb]).ToArray(), done.Select(d => !d).ToArray());
            if (done.All(d => d)) break;
        }

        // Finalize: open beams of unfinished rows join their row's hypotheses; the best one wins.
        var finalTokens = tokens.cpu();
        var finalScores = beamScores.cpu().data<float>().ToArray();
        var best = new long[batch][];
        var bestScores = new double[batch];
        var reasons = new FinishReason[batch];
        for (int b = 0; b < batch; b++)
        {
            if (!done[b])
                for (int j = 0; j < nb; j++)
                    hypotheses[b].Add(finalTokens[b * nb + j].data<long>().ToArray(), finalScores[b * nb + j], (int)finalTokens.shape[1], ended: false);
            // Python's sorted(...).pop(): the last of the highest scores.
            var winner = hypotheses[b].Beams.Select((h, i) => (h, i)).OrderBy(x => x.h.Score).ThenBy(x => x.i).Last().h;
            best[b] = winner.Tokens;
            bestScores[b] = winner.Score;
            reasons[b] = winner.Ended ? FinishReason.EndOfSequence : FinishReason.Length;
        }
        int longest = Math.Min(best.Max(t => t.Length) + 1, request.MaxNewTokens);
        var sequences = best.Select(t =>
        {
            var row = Enumerable.Repeat(request.Pad, longest).ToArray();
            t.AsSpan(0, Math.Min(t.Length, longest)).CopyTo(row);
            if (t.Length < longest) row[t.Length] = request.Eos[0];
            return row;
        }).ToArray();
        // Upstream fills with pad only when lengths differ; otherwise every row is exactly `longest` long.
        var (allScores, allLogits) = (GenerationRequest.Stack(stepScores), GenerationRequest.Stack(stepLogits));
        // The end id counts as generated, as in the greedy path.
        var produced = best.Select((t, b) => Math.Min(t.Length + (reasons[b] == FinishReason.EndOfSequence ? 1 : 0), longest)).ToArray();
        return new GenerationOutput(sequences, bestScores, allScores, reasons, produced) { StepLogits = allLogits };
    }
}
