using Multimodal.Processing;

namespace Multimodal.Generation;

/// <summary>A façade's batched generation: one input per row (an image and its prompt, or an interleaved prompt),
/// left-padded rows; the call carries each row's own cancellation, and <paramref name="onRowResult"/> gets each row that
/// ends before the batch, as its caller's result.</summary>
internal delegate IReadOnlyList<TextResult> BatchedGeneration<TInput>(IReadOnlyList<TInput> inputs, GenerationCall call, Action<int, TextResult>? onRowResult);

/// <summary>Dynamic batching for a façade (BLIP-2, InstructBLIP, OpenFlamingo, IDEFICS): concurrent calls with equal options
/// (and, for interleaved prompts, as many images) join one batch through the façade's gate, whole or streamed; beam searches
/// run alone (their padding is upstream's per batch).</summary>
internal sealed class FacadeBatcher<TInput> : IDisposable
{
    // Options as the caller gave them (the batch key) and as resolved once for the model. Streamed is set once a streamed
    // call has received a token: it cannot be run again alone without repeating its text.
    private sealed record Call(TInput Input, GenerationOptions Options, GenerationCall Resolved, Action<long>? OnToken)
    {
        public bool Streamed { get; set; }
    }

    private readonly DynamicBatcher<Call, TextResult> _batcher;
    private readonly Func<GenerationOptions, CancellationToken, GenerationCall> _resolve;

    /// <param name="options">batch size and wait.</param>
    /// <param name="gate">the façade's gate: a batch is one call through it.</param>
    /// <param name="resolve">the façade's call for a call's options (the checkpoint's generation_config applied).</param>
    /// <param name="generate">the façade's batched generation.</param>
    /// <param name="shape">what else rows of one batch must share (an interleaved prompt's image count); null: nothing.</param>
    public FacadeBatcher(BatchingOptions options, CallGate gate,
        Func<GenerationOptions, CancellationToken, GenerationCall> resolve, BatchedGeneration<TInput> generate, Func<TInput, object>? shape = null)
    {
        _resolve = resolve;
        _batcher = new(options,
            // A key equal to nothing runs alone.
            call => call.Resolved.Options.NumBeams > 1 ? new object() : (call.Options, shape?.Invoke(call.Input)),
            run => gate.RunAsync(() =>
            {
                var calls = run.Items;
                Action<long[], bool[]>? onTokens = calls.Any(c => c.OnToken is not null)
                    ? (ids, open) =>
                    {
                        for (int r = 0; r < calls.Count; r++)
                            if (open[r] && calls[r].OnToken is { } onToken)
                            {
                                calls[r].Streamed = true;
                                onToken(ids[r]);
                            }
                    }
                    : null;
                var call = calls[0].Resolved with { Cancel = run.Cancel, OnTokens = onTokens, RowCancel = run.RowCancel };
                return generate(calls.Select(c => c.Input).ToList(), call, run.CompleteRow);
            }, run.Cancel),
            call => !call.Streamed);
    }

    /// <summary>The most rows one batch has had so far.</summary>
    public int LargestBatch => _batcher.LargestBatch;

    /// <summary>One call's result.</summary>
    /// <remarks>The options are resolved here, once: a bad option fails its own call, not a batch.</remarks>
    public Task<TextResult> RunAsync(TInput input, GenerationOptions options, CancellationToken cancellationToken) =>
        _batcher.RunAsync(new Call(input, options, _resolve(options, default), null), cancellationToken);

    /// <summary>One call's stream: text pieces, then the whole result.</summary>
    public IAsyncEnumerable<TextChunk> StreamAsync(ITextTokenizer tokenizer, TInput input, GenerationOptions options, CancellationToken cancellationToken) =>
        GenerationStream.JoinBatchAsync(tokenizer,
            (onToken, token) => _batcher.RunAsync(new Call(input, options, _resolve(options, default), onToken), token), cancellationToken);

    /// <inheritdoc/>
    public void Dispose() => _batcher.Dispose();
}
