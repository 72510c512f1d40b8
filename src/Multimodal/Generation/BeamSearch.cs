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
        using var outer = NewDisposeScope();
        using var cache = request.Options.UseCache ? request.Model.NewCache() : null;
        var run = new Running(request, cache);
        for (int step = 0; step < request.MaxNewTokens; step++)
        {
            request.Cancel.ThrowIfCancellationRequested();
            using var scope = NewDisposeScope();
            if (run.Step(step)) break;
        }
        return run.Output();
    }

    /// <summary>One beam search's state: B·nb running rows (row b·nb + j is beam j of request row b).</summary>
    private sealed class Running
    {
        private readonly GenerationRequest _request;
        private readonly KvCache? _cache;
        private readonly int _batch, _nb, _keep;
        private readonly Device _device;
        private readonly Tensor _embeds;
        private readonly Tensor? _promptIds;
        private Tensor _mask, _beamScores, _tokens;
        private readonly BeamHypotheses[] _hypotheses;
        private readonly bool[] _done;
        private readonly List<Tensor> _stepScores = [], _stepLogits = [];

        public Running(GenerationRequest request, KvCache? cache)
        {
            (_request, _cache) = (request, cache);
            var options = request.Options;
            _nb = options.NumBeams;
            _batch = (int)request.PromptEmbeds.size(0);
            _device = request.PromptEmbeds.device;
            // Candidates per row: enough that nb of them do not end, whatever the number of end ids.
            _keep = Math.Max(2, 1 + request.Eos.Length) * _nb;
            _embeds = request.PromptEmbeds.repeat_interleave(_nb, 0);                   // (B·nb, T, E)
            _mask = request.PromptMask.repeat_interleave(_nb, 0);                       // (B·nb, T)
            _promptIds = request.PromptIds?.repeat_interleave(_nb, 0);                  // (B·nb, T) or null
            var beamScores = zeros(_batch, _nb, ScalarType.Float32, _device);
            beamScores[.., 1..] = -1e9;                                                // only beam 0 is live at first
            _beamScores = beamScores.view(-1);
            _tokens = empty(_batch * _nb, 0, ScalarType.Int64, _device);
            _hypotheses = Enumerable.Range(0, _batch)
                .Select(_ => new BeamHypotheses(_nb, options.LengthPenalty, options.EarlyStopping, request.MaxNewTokens)).ToArray();
            _done = new bool[_batch];
        }

        /// <summary>One step: scores every continuation, keeps nb per row; true when every row is done.</summary>
        public bool Step(int step)
        {
            var options = _request.Options;
            var logits = _request.NextLogits(_embeds, _mask, _tokens, _cache, _promptIds);
            var processed = LogitsProcessors.Apply(GenerationRequest.PenaltyIds(_promptIds, _tokens), logits.log_softmax(-1), options,
                _request.Eos, _request.MinNewTokens, generated: step, minTokensToKeep: 2);
            if (options.OutputScores)
            {
                _stepScores.Add(processed.cpu().MoveToOuterDisposeScope());
                _stepLogits.Add(logits.cpu().MoveToOuterDisposeScope());
            }
            long vocab = processed.size(1);
            var total = processed.Plus(_beamScores.unsqueeze(1)).view(_batch, _nb * vocab);
            var (topScores, topIndex) = total.topk(_keep, 1, largest: true, sorted: true);
            var (nextScores, nextTokens, nextRows) = Select(topScores.cpu().data<float>().ToArray(), topIndex.cpu().data<long>().ToArray(), vocab, step + 1);

            var rowIndex = tensor(nextRows, device: _device);
            _beamScores = tensor(nextScores, device: _device).MoveToOuterDisposeScope();
            _tokens = cat([_tokens.index_select(0, rowIndex), tensor(nextTokens, device: _device).unsqueeze(1)], 1).MoveToOuterDisposeScope();
            _mask = cat([_mask, ones(_batch * _nb, 1, ScalarType.Int64, _device)], 1).MoveToOuterDisposeScope();
            _cache?.Reorder(rowIndex);
            _request.OnTokens?.Invoke(Enumerable.Range(0, _batch).Select(b => nextTokens[b * _nb]).ToArray(), _done.Select(d => !d).ToArray());
            return _done.All(d => d);
        }

        // BeamSearchScorer.process: per row, the best candidates in order; one ending in an end id within the top nb
        // becomes a finished hypothesis, the others fill the nb beams. Returns each new beam's score, token and source row.
        private (float[] Scores, long[] Tokens, long[] Rows) Select(float[] candScores, long[] candIndex, long vocab, int currentLength)
        {
            int rowsTotal = _batch * _nb;
            var (nextScores, nextTokens, nextRows) = (new float[rowsTotal], new long[rowsTotal], new long[rowsTotal]);
            var tokenRows = _tokens.cpu();
            for (int b = 0; b < _batch; b++)
            {
                if (_done[b])
                {
                    // A finished row keeps running on pad tokens (its result is already decided).
                    for (int j = 0; j < _nb; j++) (nextTokens[b * _nb + j], nextRows[b * _nb + j]) = (_request.Pad, b * _nb);
                    continue;
                }
                int filled = 0;
                for (int rank = 0; rank < _keep && filled < _nb; rank++)
                {
                    long flat = candIndex[b * _keep + rank];
                    long token = flat % vocab;
                    int source = b * _nb + (int)(flat / vocab);
                    float score = candScores[b * _keep + rank];
                    if (_request.Eos.Contains(token))
                    {
                        if (rank < _nb) _hypotheses[b].Add(tokenRows[source].data<long>().ToArray(), score, currentLength, ended: true);
                        continue;
                    }
                    (nextScores[b * _nb + filled], nextTokens[b * _nb + filled], nextRows[b * _nb + filled]) = (score, token, source);
                    filled++;
                }
                if (filled < _nb) throw new InvalidOperationException($"beam search found only {filled} of {_nb} continuations for row {b}.");
                _done[b] = _hypotheses[b].IsDone(candScores[b * _keep], currentLength);
            }
            return (nextScores, nextTokens, nextRows);
        }

        /// <summary>BeamSearchScorer.finalize: open beams of unfinished rows join their row's hypotheses; the best one wins,
        /// with an end id appended where it is shorter than the longest.</summary>
        public GenerationOutput Output()
        {
            var finalTokens = _tokens.cpu();
            var finalScores = _beamScores.cpu().data<float>().ToArray();
            var best = new long[_batch][];
            var bestScores = new double[_batch];
            var reasons = new FinishReason[_batch];
            for (int b = 0; b < _batch; b++)
            {
                if (!_done[b])
                    for (int j = 0; j < _nb; j++)
                        _hypotheses[b].Add(finalTokens[b * _nb + j].data<long>().ToArray(), finalScores[b * _nb + j], (int)finalTokens.size(1), ended: false);
                // Python's sorted(...).pop(): the last of the highest scores.
                var winner = _hypotheses[b].Beams.Select((h, i) => (h, i)).OrderBy(x => x.h.Score).ThenBy(x => x.i).Last().h;
                (best[b], bestScores[b]) = (winner.Tokens, winner.Score);
                reasons[b] = winner.Ended ? FinishReason.EndOfSequence : FinishReason.Length;
            }
            int longest = Math.Min(best.Max(t => t.Length) + 1, _request.MaxNewTokens);
            // Upstream fills with pad only when lengths differ; otherwise every row is exactly `longest` long.
            var sequences = best.Select(t =>
            {
                var row = Enumerable.Repeat(_request.Pad, longest).ToArray();
                t.AsSpan(0, Math.Min(t.Length, longest)).CopyTo(row);
                if (t.Length < longest) row[t.Length] = _request.Eos[0];
                return row;
            }).ToArray();
            var (allScores, allLogits) = (GenerationRequest.Stack(_stepScores), GenerationRequest.Stack(_stepLogits));
            // The end id counts as generated, as in the greedy path.
            var produced = best.Select((t, b) => Math.Min(t.Length + (reasons[b] == FinishReason.EndOfSequence ? 1 : 0), longest)).ToArray();
            return new GenerationOutput(sequences, bestScores, allScores, reasons, produced) { StepLogits = allLogits };
        }
    }
}
