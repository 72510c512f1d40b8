using Multimodal.Processing;

namespace Multimodal.Generation;

/// <summary>A façade's batched generation: one prompt per image, left-padded rows; the call carries each row's own
/// cancellation and the early answer of each row that ends before the batch.</summary>
internal delegate IReadOnlyList<TextResult> SingleImageGeneration(IReadOnlyList<DecodedImage> images, IReadOnlyList<string> prompts, GenerationCall call);

/// <summary>Dynamic batching for a single-image façade (BLIP-2, InstructBLIP): concurrent calls with equal options join one
/// batch through the façade's gate, whole or streamed; beam searches run alone (their padding is upstream's per batch).</summary>
internal sealed class SingleImageBatcher : IDisposable
{
    // Set once a streamed call has received a token: it cannot be run again alone without repeating its text.
    private sealed record Call(DecodedImage Image, string Prompt, GenerationOptions Options, Action<long>? OnToken)
    {
        public bool Streamed { get; set; }
    }

    private readonly DynamicBatcher<Call, TextResult> _batcher;
    private readonly Func<GenerationOptions, CancellationToken, GenerationCall> _resolve;

    /// <param name="options">batch size and wait.</param>
    /// <param name="gate">the façade's gate: a batch is one call through it.</param>
    /// <param name="tokenizer">decodes rows answered early.</param>
    /// <param name="resolve">the façade's call for a call's options (the checkpoint's generation_config applied).</param>
    /// <param name="generate">the façade's batched generation.</param>
    public SingleImageBatcher(BatchingOptions options, CallGate gate, ITextTokenizer tokenizer,
        Func<GenerationOptions, CancellationToken, GenerationCall> resolve, SingleImageGeneration generate)
    {
        _resolve = resolve;
        _batcher = new(options,
            call => resolve(call.Options, default).Options.NumBeams > 1 ? new object() : call.Options,   // a key equal to nothing: alone
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
                var call = resolve(calls[0].Options, run.Cancel) with
                {
                    OnTokens = onTokens, RowCancel = run.RowCancel,
                    OnRowEnded = (row, alone) => run.CompleteRow(row, TextResult.FromBatch(alone, tokenizer, beams: false)[0]),
                };
                return generate(calls.Select(c => c.Image).ToList(), calls.Select(c => c.Prompt).ToList(), call);
            }, run.Cancel),
            call => !call.Streamed);
    }

    /// <summary>The most rows one batch has had so far.</summary>
    public int LargestBatch => _batcher.LargestBatch;

    /// <summary>One call's result.</summary>
    public Task<TextResult> RunAsync(DecodedImage image, string prompt, GenerationOptions options, CancellationToken cancellationToken)
    {
        _resolve(options, default);   // a bad option fails its own call, not a batch
        return _batcher.RunAsync(new Call(image, prompt, options, null), cancellationToken);
    }

    /// <summary>One call's stream: text pieces, then the whole result.</summary>
    public IAsyncEnumerable<TextChunk> StreamAsync(ITextTokenizer tokenizer, DecodedImage image, string prompt, GenerationOptions options,
        CancellationToken cancellationToken) =>
        GenerationStream.JoinBatchAsync(tokenizer, (onToken, token) =>
        {
            _resolve(options, default);
            return _batcher.RunAsync(new Call(image, prompt, options, onToken), token);
        }, cancellationToken);

    /// <inheritdoc/>
    public void Dispose() => _batcher.Dispose();
}
