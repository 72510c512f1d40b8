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
        var options = request.Options;
        using var outer = NewDisposeScope();
        int batch = (int)request.PromptEmbeds.shape[0];
        var device = request.PromptEmbeds.device;
        using var cache = options.UseCache ? request.Model.NewCache() : null;
        TorchSharp.torch.Generator? generator = options.DoSample && options.Seed is ulong seed ? new TorchSharp.torch.Generator(seed, device) : null;
        bool compact = request.RowCancel is not null && !options.OutputScores;
        var eos = tensor(request.Eos, device: device);
        // Running state, one row per entry of `active` (the request rows still in the batch).
        var active = Enumerable.Range(0, batch).ToArray();
        var promptEmbeds = request.PromptEmbeds;
        var promptIds = request.PromptIds;
        var tokens = empty(batch, 0, ScalarType.Int64, device);
        var mask = request.PromptMask;
        var unfinished = ones(batch, ScalarType.Bool, device);
        var logProbSum = zeros(batch, ScalarType.Float64, device);
        var counted = zeros(batch, ScalarType.Float64, device);
        // Per request row.
        var rows = Enumerable.Range(0, batch).Select(_ => new List<long>()).ToArray();
        var reasons = Enumerable.Repeat(FinishReason.Length, batch).ToArray();
        var produced = new int[batch];
        var scoresPerRow = new double[batch];
        var stepScores = new List<Tensor>();
        var stepLogits = new List<Tensor>();
        for (int step = 0; step < request.MaxNewTokens; step++)
        {
            request.Cancel.ThrowIfCancellationRequested();
            using var scope = NewDisposeScope();
            var logits = request.NextLogits(promptEmbeds, mask, tokens, cache, promptIds);
            var scores = LogitsProcessors.Apply(GenerationRequest.PenaltyIds(promptIds, tokens), logits, options, request.Eos, request.MinNewTokens, generated: step);
            if (options.OutputScores)
            {
                stepScores.Add(scores.cpu().MoveToOuterDisposeScope());
                stepLogits.Add(logits.cpu().MoveToOuterDisposeScope());
            }
            var logProbs = scores.log_softmax(-1);
            var next = options.DoSample
                ? multinomial(scores.softmax(-1), 1, generator: generator).squeeze(1)
                : scores.argmax(-1);
            var chosen = logProbs.gather(1, next.unsqueeze(1)).squeeze(1).to(ScalarType.Float64);
            logProbSum = logProbSum.Plus(where(unfinished, chosen, zeros_like(chosen))).MoveToOuterDisposeScope();
            counted = counted.Plus(unfinished.to(ScalarType.Float64)).MoveToOuterDisposeScope();
            next = where(unfinished, next, Scalars.Full(next.shape, request.Pad, next.dtype, next.device));
            tokens = cat([tokens, next.unsqueeze(1)], 1).MoveToOuterDisposeScope();
            mask = cat([mask, ones(active.Length, 1, ScalarType.Int64, device)], 1).MoveToOuterDisposeScope();

            var ids = next.cpu().data<long>().ToArray();
            var ended = unfinished.logical_and(next.unsqueeze(1).eq(eos.unsqueeze(0)).any(1)).cpu().data<bool>().ToArray();
            var stillOpen = unfinished.cpu().data<bool>().ToArray();
            for (int i = 0; i < active.Length; i++)
            {
                int r = active[i];
                rows[r].Add(ids[i]);
                if (!stillOpen[i]) continue;
                produced[r]++;
                if (ended[i]) reasons[r] = FinishReason.EndOfSequence;
                else if (request.HitsStopString(rows[r]))
                {
                    ended[i] = true;
                    reasons[r] = FinishReason.StopString;
                }
                else if (request.RowCancel?[r].IsCancellationRequested == true)
                {
                    ended[i] = true;
                    reasons[r] = FinishReason.Cancelled;
                }
            }
            request.OnTokens?.Invoke(Spread(ids, active, batch, request.Pad), Spread(stillOpen, active, batch, false));
            unfinished = unfinished.logical_and(tensor(ended, device: device).logical_not()).MoveToOuterDisposeScope();
            if (!unfinished.any().item<bool>()) break;
            if (request.RowCancel is null || !ended.Any(e => e)) continue;

            var leaving = logProbSum.div(counted.AtLeast(1)).cpu().data<double>().ToArray();
            for (int i = 0; i < active.Length; i++)
            {
                if (!ended[i]) continue;
                int r = active[i];
                scoresPerRow[r] = leaving[i];
                request.OnRowEnded?.Invoke(r, new GenerationOutput([rows[r].ToArray()], [leaving[i]], null, [reasons[r]], [produced[r]]));
            }
            if (!compact) continue;
            var keep = Enumerable.Range(0, active.Length).Where(i => stillOpen[i] && !ended[i]).ToArray();
            var keepRows = tensor(keep.Select(i => (long)i).ToArray(), device: device);
            if (!request.Model.SelectRows(keepRows))
            {
                compact = false;
                continue;
            }
            cache?.Reorder(keepRows);
            Tensor Keep(Tensor t) => t.index_select(0, keepRows).MoveToOuterDisposeScope();
            (tokens, mask, unfinished, logProbSum, counted, promptEmbeds) = (Keep(tokens), Keep(mask), Keep(unfinished), Keep(logProbSum), Keep(counted), Keep(promptEmbeds));
            if (promptIds is not null) promptIds = Keep(promptIds);
            active = keep.Select(i => active[i]).ToArray();
        }
        var final = logProbSum.div(counted.AtLeast(1)).cpu().data<double>().ToArray();
        for (int i = 0; i < active.Length; i++) scoresPerRow[active[i]] = final[i];
        var (allScores, allLogits) = (GenerationRequest.Stack(stepScores), GenerationRequest.Stack(stepLogits));
        return new GenerationOutput(rows.Select(r => r.ToArray()).ToArray(), scoresPerRow, allScores, reasons, produced) { StepLogits = allLogits };
    }

    // The running batch's per-row values spread over every request row (rows that left get `missing`).
    private static T[] Spread<T>(T[] values, int[] active, int batch, T missing)
    {
        if (active.Length == batch) return values;
        var all = Enumerable.Repeat(missing, batch).ToArray();
        for (int i = 0; i < active.Length; i++) all[active[i]] = values[i];
        return all;
    }
}
