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
        var channel = Channel.CreateUnbounded<TextChunk>(new UnboundedChannelOptions { SingleReader = true, SingleWriter = true });
        await gate.WaitAsync(cancellationToken).ConfigureAwait(false);
        var producer = gate.OnWorker(() =>
        {
            try
            {
                var decoder = tokenizer.CreateStreamingDecoder();
                var result = generate((ids, open) =>
                {
                    if (!open[0]) return;
                    var piece = decoder.Push(ids[0]);
                    if (piece.Length > 0) channel.Writer.TryWrite(new TextChunk(piece, null));
                }, stop.Token);
                var rest = decoder.Flush();
                if (rest.Length > 0) channel.Writer.TryWrite(new TextChunk(rest, null));
                channel.Writer.TryWrite(new TextChunk("", result));
                channel.Writer.TryComplete();
            }
            catch (Exception e)
            {
                channel.Writer.TryComplete(e);
            }
            finally
            {
                gate.Release();
            }
        });
        try
        {
            await foreach (var chunk in channel.Reader.ReadAllAsync(cancellationToken).ConfigureAwait(false))
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

    /// <summary>The text pieces only.</summary>
    public static async IAsyncEnumerable<string> TextAsync(IAsyncEnumerable<TextChunk> chunks,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        await foreach (var chunk in chunks.WithCancellation(cancellationToken).ConfigureAwait(false))
            if (chunk.Text.Length > 0) yield return chunk.Text;
    }
}
