using Multimodal.Common;

namespace Multimodal.Generation;

/// <summary>Greedy decoding and multinomial sampling, transformers v4.45.1 <c>GenerationMixin._sample</c>
/// (generation/utils.py): one token per row per step, rows that ended keep receiving the pad id (and are
/// still run, as upstream does), the batch stops when every row has ended or the limit is reached.</summary>
internal static class GreedySearch
{
    public static GenerationOutput Run(GenerationRequest request)
    {
        var options = request.Options;
        using var outer = NewDisposeScope();
        long batch = request.PromptEmbeds.shape[0];
        var device = request.PromptEmbeds.device;
        using var cache = options.UseCache ? request.Model.NewCache() : null;
        TorchSharp.torch.Generator? generator = options.DoSample && options.Seed is ulong seed ? new TorchSharp.torch.Generator(seed, device) : null;
        var eos = tensor(request.Eos, device: device);
        var tokens = empty(batch, 0, ScalarType.Int64, device);
        var mask = request.PromptMask;
        var unfinished = ones(batch, ScalarType.Bool, device);
        var logProbSum = zeros(batch, ScalarType.Float64, device);
        var counted = zeros(batch, ScalarType.Float64, device);
        var rows = Enumerable.Range(0, (int)batch).Select(_ => new List<long>()).ToArray();
        var reasons = Enumerable.Repeat(FinishReason.Length, (int)batch).ToArray();
        var produced = new int[batch];
        var stepScores = new List<Tensor>();
        var stepLogits = new List<Tensor>();
        for (int step = 0; step < request.MaxNewTokens; step++)
        {
            request.Cancel.ThrowIfCancellationRequested();
            using var scope = NewDisposeScope();
            var logits = request.NextLogits(request.PromptEmbeds, mask, tokens, cache, request.PromptIds);
            var scores = LogitsProcessors.Apply(GenerationRequest.PenaltyIds(request.PromptIds, tokens), logits, options, request.Eos, request.MinNewTokens, generated: step);
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
            mask = cat([mask, ones(batch, 1, ScalarType.Int64, device)], 1).MoveToOuterDisposeScope();

            var ids = next.cpu().data<long>().ToArray();
            var ended = unfinished.logical_and(next.unsqueeze(1).eq(eos.unsqueeze(0)).any(1)).cpu().data<bool>().ToArray();
            var stillOpen = unfinished.cpu().data<bool>().ToArray();
            for (int r = 0; r < batch; r++)
            {
                rows[r].Add(ids[r]);
                if (!stillOpen[r]) continue;
                produced[r]++;
                if (ended[r]) reasons[r] = FinishReason.EndOfSequence;
                else if (request.HitsStopString(rows[r]))
                {
                    ended[r] = true;
                    reasons[r] = FinishReason.StopString;
                }
            }
            request.OnTokens?.Invoke(ids, stillOpen);
            unfinished = unfinished.logical_and(tensor(ended, device: device).logical_not()).MoveToOuterDisposeScope();
            if (!unfinished.any().item<bool>()) break;
        }
        var scoresPerRow = logProbSum.div(counted.AtLeast(1)).cpu().data<double>().ToArray();
        var (allScores, allLogits) = (GenerationRequest.Stack(stepScores), GenerationRequest.Stack(stepLogits));
        return new GenerationOutput(rows.Select(r => r.ToArray()).ToArray(), scoresPerRow, allScores, reasons, produced) { StepLogits = allLogits };
    }
}
