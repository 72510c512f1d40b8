using Multimodal.Language;

namespace Multimodal.Generation;

/// <summary>Everything a search needs: the language model, the prompt as embeddings, the resolved
/// limits and special ids, and the caller's hooks.</summary>
/// <param name="Model">the decoder-only language model.</param>
/// <param name="PromptEmbeds">(B, T, E) embeddings of the prompt (BLIP-2: queries and text).</param>
/// <param name="PromptMask">(B, T) int64 mask, 1 for real positions.</param>
/// <param name="PromptIds">(B, T) ids of the prompt when it is made of tokens (Flamingo): they are fed to
/// the model with the embeddings, and the repetition penalty sees them, as upstream's running
/// <c>input_ids</c> holds them; null when the prompt is embeddings only (BLIP-2).</param>
/// <param name="Options">the caller's options (validated).</param>
/// <param name="MaxNewTokens">resolved limit of new tokens.</param>
/// <param name="MinNewTokens">resolved minimum of new tokens before EOS is allowed.</param>
/// <param name="Eos">EOS ids.</param>
/// <param name="Pad">id written after a row has ended.</param>
/// <param name="Decode">decodes a row's new tokens to text (needed for stop strings), or null.</param>
/// <param name="OnTokens">called after each step with the new token of every row (pad for ended rows), or null.</param>
/// <param name="Cancel">checked before each step.</param>
internal sealed record GenerationRequest(
    ICausalLanguageModel Model,
    Tensor PromptEmbeds,
    Tensor PromptMask,
    Tensor? PromptIds,
    GenerationOptions Options,
    int MaxNewTokens,
    int MinNewTokens,
    long[] Eos,
    long Pad,
    Func<IReadOnlyList<long>, string>? Decode,
    Action<long[], bool[]>? OnTokens,
    CancellationToken Cancel)
{
    /// <summary>(N, V) float32 logits for the next position. The first step feeds the prompt; later
    /// steps feed only the last token when the cache holds the rest, or everything again without it.</summary>
    public Tensor NextLogits(Tensor promptEmbeds, Tensor mask, Tensor tokens, KvCache? cache, Tensor? promptIds)
    {
        using var scope = NewDisposeScope();
        long step = tokens.shape[1];
        Tensor input;
        Tensor? ids;
        if (step == 0)
        {
            input = promptEmbeds;
            ids = promptIds;
        }
        else if (cache is not null)
        {
            ids = tokens.narrow(1, step - 1, 1);
            input = Model.EmbedTokens(ids);
        }
        else
        {
            input = cat([promptEmbeds, Model.EmbedTokens(tokens).to(promptEmbeds.dtype)], 1);
            ids = promptIds is null ? null : cat([promptIds, tokens], 1);
        }
        var logits = Model.Forward(input.to(promptEmbeds.dtype), mask, cache, ids);
        return logits.select(1, logits.shape[1] - 1).to(ScalarType.Float32).MoveToOuterDisposeScope();
    }

    /// <summary>(N, steps, V) of per-step (N, V) tensors, outliving the search's dispose scopes; null when none were kept.</summary>
    public static Tensor? Stack(List<Tensor> steps)
    {
        if (steps.Count == 0) return null;
        var all = stack(steps, 1).MoveToOuterDisposeScope();
        all.DetachFromDisposeScope();
        return all;
    }

    /// <summary>The ids the repetition penalty looks at: the prompt's (when it has ids) and the new ones.</summary>
    public static Tensor PenaltyIds(Tensor? promptIds, Tensor tokens) => promptIds is null ? tokens : cat([promptIds, tokens], 1);

    /// <summary>Whether a row's decoded text contains a stop string.</summary>
    public bool HitsStopString(IReadOnlyList<long> rowTokens)
    {
        if (Options.StopStrings.Count == 0) return false;
        var text = Decode!(rowTokens);
        return Options.StopStrings.Any(s => text.Contains(s, StringComparison.Ordinal));
    }
}
