using System.Runtime.CompilerServices;
using System.Threading.Channels;
using Multimodal.Processing;

namespace Multimodal.Generation;

/// <summary>A piece of streamed text; the last piece of a stream carries the whole result (its finish reason
/// and token counts).</summary>
/// <param name="Text">new text (possibly empty).</param>
/// <param name="Result">set on the last chunk only.</param>
public readonly record struct TextChunk(string Text, TextResult? Result);

/// <summary>Runs one generation on the gate's thread and streams its text: the façades' common streaming
/// path. Calls are serialized by the façade's gate; a consumer that stops enumerating (break, dispose,
/// cancellation) cancels the generation within one step and waits for it to release its tensors and the gate.</summary>
internal static class GenerationStream
{
    /// <param name="gate">the façade's one-call-at-a-time gate.</param>
    /// <param name="tokenizer">decodes row 0's new ids incrementally.</param>
    /// <param name="generate">runs the generation with a per-step hook and a token; returns the final result.</param>
    /// <param name="cancellationToken">the consumer's token.</param>
    public static async IAsyncEnumerable<TextChunk> RunAsync(CallGate gate, ITextTokenizer tokenizer,
        Func<Action<long[], bool[]>, CancellationToken, TextResult> generate,
        [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        var chunks = new ChunkWriter(tokenizer);
        await gate.WaitAsync(cancellationToken).ConfigureAwait(false);
        var producer = gate.OnWorker(() =>
        {
            try
            {
                chunks.Finish(generate((ids, open) =>
                {
                    if (open[0]) chunks.Push(ids[0]);
                }, stop.Token));
            }
            catch (Exception e)
            {
                chunks.Fail(e);
            }
            finally
            {
                gate.Release();
            }
        });
        try
        {
            await foreach (var chunk in chunks.ReadAllAsync(cancellationToken).ConfigureAwait(false))
                yield return chunk;
            await producer.ConfigureAwait(false);
        }
        finally
        {
            // Reached early when the consumer breaks, disposes or cancels: stop the generation and wait until
            // it has left (its tensors freed, the gate released) before the enumerator is gone.
            stop.Cancel();
            try
            {
                await producer.ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
            }
        }
    }

    /// <summary>Streams one row of a dynamic batch: <paramref name="join"/> queues the call with a sink for its row's
    /// new ids and returns its result, which arrives when the row ends (after its last id). A consumer that stops
    /// enumerating cancels the call's token, which ends its row at the next step.</summary>
    /// <param name="tokenizer">decodes the row's ids incrementally.</param>
    /// <param name="join">queues the call: (sink for the row's ids, the call's token) → its result.</param>
    /// <param name="cancellationToken">the consumer's token.</param>
    public static async IAsyncEnumerable<TextChunk> JoinBatchAsync(ITextTokenizer tokenizer,
        Func<Action<long>, CancellationToken, Task<TextResult>> join, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        var chunks = new ChunkWriter(tokenizer);
        _ = join(chunks.Push, stop.Token).ContinueWith(done =>
        {
            if (done.IsCompletedSuccessfully) chunks.Finish(done.Result);
            else chunks.Fail(done.Exception?.InnerException ?? new OperationCanceledException(cancellationToken));
        }, CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
        try
        {
            await foreach (var chunk in chunks.ReadAllAsync(cancellationToken).ConfigureAwait(false))
                yield return chunk;
        }
        finally
        {
            stop.Cancel();
        }
    }

    // Decodes one row's ids into text chunks for a single reader; the last chunk carries the result.
    private sealed class ChunkWriter(ITextTokenizer tokenizer)
    {
        private readonly Channel<TextChunk> _channel =
            Channel.CreateUnbounded<TextChunk>(new UnboundedChannelOptions { SingleReader = true, SingleWriter = true });
        private readonly IStreamingDecoder _decoder = tokenizer.CreateStreamingDecoder();

        public void Push(long id)
        {
            var piece = _decoder.Push(id);
            if (piece.Length > 0) _channel.Writer.TryWrite(new TextChunk(piece, null));
        }

        public void Finish(TextResult result)
        {
            var rest = _decoder.Flush();
            if (rest.Length > 0) _channel.Writer.TryWrite(new TextChunk(rest, null));
            _channel.Writer.TryWrite(new TextChunk("", result));
            _channel.Writer.TryComplete();
        }

        public void Fail(Exception e) => _channel.Writer.TryComplete(e);

        public IAsyncEnumerable<TextChunk> ReadAllAsync(CancellationToken cancellationToken) => _channel.Reader.ReadAllAsync(cancellationToken);
    }

    /// <summary>The text pieces only.</summary>
    public static async IAsyncEnumerable<string> TextAsync(IAsyncEnumerable<TextChunk> chunks,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        await foreach (var chunk in chunks.WithCancellation(cancellationToken).ConfigureAwait(false))
            if (chunk.Text.Length > 0) yield return chunk.Text;
    }
}
