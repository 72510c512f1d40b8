using Multimodal.Common;

namespace Multimodal.Generation;

/// <summary>Greedy decoding and multinomial sampling, transformers v4.45.1 <c>GenerationMixin._sample</c>
/// (generation/utils.py): one token per row per step, rows that ended keep receiving the pad id (and are
/// still run, as upstream does), the batch stops when every row has ended or the limit is reached.</summary>
/// <remarks>With <see cref="GenerationRequest.RowCancel"/> (rows that are separate requests) ended and cancelled rows
/// instead leave the running batch: the cache, mask, tokens and prompt are narrowed to the rows still open, which
/// then run as a smaller batch. A row's tokens do not depend on the other rows, so this changes cost, not results.</remarks>
internal static class GreedySearch
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
            var (ended, stillOpen) = run.Step(step);
            if (!run.AnyOpen) break;
            if (request.RowCancel is null || !ended.Any(e => e)) continue;
            run.HandOutEnded(ended);
            run.Compact(ended, stillOpen);
        }
        return run.Output();
    }

    /// <summary>One generation's state. Tensors are over the running batch (one row per entry of <c>_active</c>, the
    /// request rows still in it); arrays are over request rows. Tensors replaced during a step move to the scope
    /// around the step loop.</summary>
    private sealed class Running
    {
        private readonly GenerationRequest _request;
        private readonly KvCache? _cache;
        private readonly TorchSharp.torch.Generator? _generator;
        private readonly Tensor _eos;
        private readonly Device _device;
        private bool _compact;
        private int[] _active;
        private Tensor _promptEmbeds, _mask, _tokens, _unfinished, _logProbSum, _counted;
        private Tensor? _promptIds;
        private readonly List<long>[] _rows;
        private readonly FinishReason[] _reasons;
        private readonly int[] _produced;
        private readonly double[] _scores;
        private readonly List<Tensor> _stepScores = [], _stepLogits = [];
        private readonly int[] _inputTokens;

        public Running(GenerationRequest request, KvCache? cache)
        {
            (_request, _cache) = (request, cache);
            _inputTokens = request.CountInputTokens();
            var options = request.Options;
            int batch = (int)request.PromptEmbeds.size(0);
            _device = request.PromptEmbeds.device;
            _generator = options.DoSample && options.Seed is ulong seed ? new TorchSharp.torch.Generator(seed, _device) : null;
            _compact = request.RowCancel is not null && !options.OutputScores;
            _eos = tensor(request.Eos, device: _device);
            _active = Enumerable.Range(0, batch).ToArray();
            (_promptEmbeds, _promptIds, _mask) = (request.PromptEmbeds, request.PromptIds, request.PromptMask);
            _tokens = empty(batch, 0, ScalarType.Int64, _device);
            _unfinished = ones(batch, ScalarType.Bool, _device);
            _logProbSum = zeros(batch, ScalarType.Float64, _device);
            _counted = zeros(batch, ScalarType.Float64, _device);
            _rows = Enumerable.Range(0, batch).Select(_ => new List<long>()).ToArray();
            _reasons = Enumerable.Repeat(FinishReason.Length, batch).ToArray();
            _produced = new int[batch];
            _scores = new double[batch];
        }

        public bool AnyOpen => _unfinished.any().item<bool>();

        /// <summary>Chooses and records one token per running row; returns which rows ended now and which were open.</summary>
        public (bool[] Ended, bool[] StillOpen) Step(int step)
        {
            var next = Choose(step);
            var ids = next.cpu().data<long>().ToArray();
            var ended = _unfinished.logical_and(next.unsqueeze(1).eq(_eos.unsqueeze(0)).any(1)).cpu().data<bool>().ToArray();
            var stillOpen = _unfinished.cpu().data<bool>().ToArray();
            Record(ids, ended, stillOpen);
            int batch = _rows.Length;
            _request.OnTokens?.Invoke(Spread(ids, batch, _request.Pad), Spread(stillOpen, batch, false));
            _unfinished = _unfinished.logical_and(tensor(ended, device: _device).logical_not()).MoveToOuterDisposeScope();
            return (ended, stillOpen);
        }

        // Logits → processors → the next token (ended rows get the pad); the running log-probability sums grow.
        private Tensor Choose(int step)
        {
            var options = _request.Options;
            var logits = _request.NextLogits(_promptEmbeds, _mask, _tokens, _cache, _promptIds);
            var scores = LogitsProcessors.Apply(GenerationRequest.PenaltyIds(_promptIds, _tokens), logits, options, _request.Eos,
                _request.MinNewTokens, generated: step);
            if (options.OutputScores)
            {
                _stepScores.Add(scores.cpu().MoveToOuterDisposeScope());
                _stepLogits.Add(logits.cpu().MoveToOuterDisposeScope());
            }
            var next = options.DoSample ? multinomial(scores.softmax(-1), 1, generator: _generator).squeeze(1) : scores.argmax(-1);
            var chosen = scores.log_softmax(-1).gather(1, next.unsqueeze(1)).squeeze(1).to(ScalarType.Float64);
            _logProbSum = _logProbSum.Plus(where(_unfinished, chosen, zeros_like(chosen))).MoveToOuterDisposeScope();
            _counted = _counted.Plus(_unfinished.to(ScalarType.Float64)).MoveToOuterDisposeScope();
            next = where(_unfinished, next, Scalars.Full(Shape.Of(next), _request.Pad, next.dtype, next.device));
            _tokens = cat([_tokens, next.unsqueeze(1)], 1).MoveToOuterDisposeScope();
            _mask = cat([_mask, ones(_active.Length, 1, ScalarType.Int64, _device)], 1).MoveToOuterDisposeScope();
            return next;
        }

        // Appends the ids to their request rows and decides why an open row ends: its end id, a stop string, or its
        // request's cancellation (marked in `ended`).
        private void Record(long[] ids, bool[] ended, bool[] stillOpen)
        {
            for (int i = 0; i < _active.Length; i++)
            {
                int r = _active[i];
                _rows[r].Add(ids[i]);
                if (!stillOpen[i]) continue;
                _produced[r]++;
                if (ended[i]) _reasons[r] = FinishReason.EndOfSequence;
                else if (_request.HitsStopString(_rows[r])) (ended[i], _reasons[r]) = (true, FinishReason.StopString);
                else if (_request.RowCancel?[r].IsCancellationRequested == true) (ended[i], _reasons[r]) = (true, FinishReason.Cancelled);
            }
        }

        /// <summary>Answers each row that ended now, alone, before the batch ends.</summary>
        public void HandOutEnded(bool[] ended)
        {
            var leaving = _logProbSum.div(_counted.AtLeast(1)).cpu().data<double>().ToArray();
            for (int i = 0; i < _active.Length; i++)
            {
                if (!ended[i]) continue;
                int r = _active[i];
                _scores[r] = leaving[i];
                _request.OnRowEnded?.Invoke(r, new GenerationOutput([_rows[r].ToArray()], [leaving[i]], null, [_reasons[r]], [_produced[r]])
                {
                    InputTokens = [_inputTokens[r]],
                });
            }
        }

        /// <summary>Narrows the running batch to the rows still open, where the model allows it.</summary>
        public void Compact(bool[] ended, bool[] stillOpen)
        {
            if (!_compact) return;
            var keep = Enumerable.Range(0, _active.Length).Where(i => stillOpen[i] && !ended[i]).ToArray();
            var keepRows = tensor(keep.Select(i => (long)i).ToArray(), device: _device);
            if (!_request.Model.SelectRows(keepRows))
            {
                _compact = false;
                return;
            }
            _cache?.Reorder(keepRows);
            Tensor Keep(Tensor t) => t.index_select(0, keepRows).MoveToOuterDisposeScope();
            (_tokens, _mask, _unfinished, _logProbSum, _counted, _promptEmbeds) =
                (Keep(_tokens), Keep(_mask), Keep(_unfinished), Keep(_logProbSum), Keep(_counted), Keep(_promptEmbeds));
            if (_promptIds is not null) _promptIds = Keep(_promptIds);
            _active = keep.Select(i => _active[i]).ToArray();
        }

        public GenerationOutput Output()
        {
            var final = _logProbSum.div(_counted.AtLeast(1)).cpu().data<double>().ToArray();
            for (int i = 0; i < _active.Length; i++) _scores[_active[i]] = final[i];
            var (allScores, allLogits) = (GenerationRequest.Stack(_stepScores), GenerationRequest.Stack(_stepLogits));
            return new GenerationOutput(_rows.Select(r => r.ToArray()).ToArray(), _scores, allScores, _reasons, _produced) { StepLogits = allLogits };
        }

        // The running batch's per-row values spread over every request row (rows that left get `missing`).
        private T[] Spread<T>(T[] values, int batch, T missing)
        {
            if (_active.Length == batch) return values;
            var all = Enumerable.Repeat(missing, batch).ToArray();
            for (int i = 0; i < _active.Length; i++) all[_active[i]] = values[i];
            return all;
        }
    }
}
