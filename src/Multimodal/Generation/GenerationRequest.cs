
namespace Multimodal.Generation;

/// <summary>Everything a search needs: the language model, the prompt as embeddings, the resolved
/// limits and special ids, and the caller's hooks. Built with named members, one per line.</summary>
internal sealed record GenerationRequest
{
    /// <summary>The decoder-only language model (or a session that acts as one).</summary>
    public required ICausalLanguageModel Model { get; init; }

    /// <summary>(B, T, E) embeddings of the prompt (BLIP-2: queries and text).</summary>
    public required Tensor PromptEmbeds { get; init; }

    /// <summary>(B, T) int64 mask, 1 for real positions.</summary>
    public required Tensor PromptMask { get; init; }

    /// <summary>(B, T) ids of the prompt when it is made of tokens (Flamingo): they are fed to the model with the
    /// embeddings, and the repetition penalty sees them, as upstream's running <c>input_ids</c> holds them; null
    /// when the prompt is embeddings only (BLIP-2).</summary>
    public Tensor? PromptIds { get; init; }

    /// <summary>The caller's options (validated).</summary>
    public required GenerationOptions Options { get; init; }

    /// <summary>Resolved limit of new tokens.</summary>
    public required int MaxNewTokens { get; init; }

    /// <summary>Resolved minimum of new tokens before EOS is allowed.</summary>
    public int MinNewTokens { get; init; }

    /// <summary>EOS ids.</summary>
    public required long[] Eos { get; init; }

    /// <summary>Id written after a row has ended.</summary>
    public required long Pad { get; init; }

    /// <summary>Decodes a row's new tokens to text (needed for stop strings), or null.</summary>
    public Func<IReadOnlyList<long>, string>? Decode { get; init; }

    /// <summary>Called after each step with the new token of every row (pad for ended rows), or null.</summary>
    public Action<long[], bool[]>? OnTokens { get; init; }

    /// <summary>Checked before each step.</summary>
    public CancellationToken Cancel { get; init; }

    /// <summary>Rows that are independent requests (dynamic batching): when set, a row whose token is cancelled ends
    /// with <see cref="FinishReason.Cancelled"/>, and greedy search drops ended rows from the running batch (their
    /// cache, mask and tokens) when the model can select rows and no per-step scores are kept, so the rows left
    /// run as a smaller batch. Null: upstream's behaviour, ended rows run on with the pad id.</summary>
    public IReadOnlyList<CancellationToken>? RowCancel { get; init; }

    /// <summary>With <see cref="RowCancel"/>: called as soon as a row ends before the batch does, with that row alone (a
    /// one-row output), so its request can be answered without waiting for its batch-mates; null: none.</summary>
    public Action<int, GenerationOutput>? OnRowEnded { get; init; }

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
