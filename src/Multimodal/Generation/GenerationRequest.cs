
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

    /// <summary>The call: resolved options, decoder, observer hooks and cancellation.</summary>
    public required GenerationCall Call { get; init; }

    /// <summary>Per row, the positions the language model read before the first new token (the prompt mask's real
    /// positions unless the caller counts otherwise: T5's are the encoder's).</summary>
    public int[]? InputTokens { get; init; }

    /// <summary><see cref="GenerationCall.Options"/>.</summary>
    public GenerationOptions Options => Call.Options;

    /// <summary>Resolved limit of new tokens.</summary>
    public required int MaxNewTokens { get; init; }

    /// <summary>Resolved minimum of new tokens before EOS is allowed.</summary>
    public int MinNewTokens { get; init; }

    /// <summary>EOS ids.</summary>
    public required long[] Eos { get; init; }

    /// <summary>Id written after a row has ended.</summary>
    public required long Pad { get; init; }

    /// <summary><see cref="GenerationCall.Decode"/>.</summary>
    public Func<IReadOnlyList<long>, string>? Decode => Call.Decode;

    /// <summary><see cref="GenerationCall.OnTokens"/>.</summary>
    public Action<long[], bool[]>? OnTokens => Call.OnTokens;

    /// <summary><see cref="GenerationCall.Cancel"/>.</summary>
    public CancellationToken Cancel => Call.Cancel;

    /// <summary><see cref="GenerationCall.RowCancel"/>.</summary>
    public IReadOnlyList<CancellationToken>? RowCancel => Call.RowCancel;

    /// <summary><see cref="GenerationCall.OnRowEnded"/>.</summary>
    public Action<int, GenerationOutput>? OnRowEnded => Call.OnRowEnded;

    /// <summary>The input-token count of every row (see <see cref="InputTokens"/>).</summary>
    public int[] CountInputTokens() => InputTokens ?? PromptMask.sum(1).cpu().data<long>().ToArray().Select(n => (int)n).ToArray();

    /// <summary>(N, V) float32 logits for the next position. The first step feeds the prompt; later
    /// steps feed only the last token when the cache holds the rest, or everything again without it.</summary>
    public Tensor NextLogits(Tensor promptEmbeds, Tensor mask, Tensor tokens, KvCache? cache, Tensor? promptIds)
    {
        using var scope = NewDisposeScope();
        long step = tokens.size(1);
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
        return logits.select(1, logits.size(1) - 1).to(ScalarType.Float32).MoveToOuterDisposeScope();
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
