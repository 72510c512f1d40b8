using Multimodal.Processing;

namespace Multimodal.Generation;

/// <summary>What the interleaved-prompt pipelines (OpenFlamingo, IDEFICS) share: one call at a time through a
/// gate, whole or streamed generation, disposal that waits for the call in progress. Each family turns the
/// prompt into its model's inputs.</summary>
/// <remarks>Thread-safe: concurrent calls run one at a time, so N concurrent calls give what N sequential
/// calls give. Disposing waits for the call in progress.</remarks>
public abstract class InterleavedPipeline : IDisposable
{
    private readonly CallGate _gate = new();

    private protected InterleavedPipeline()
    {
    }

    /// <summary>Decodes the stream.</summary>
    private protected abstract ITextTokenizer StreamTokenizer { get; }

    /// <summary>Beams the options ask for once the model's defaults are applied (streaming needs one).</summary>
    private protected abstract int BeamsOf(GenerationOptions options);

    /// <summary>Runs the model on a prompt; <paramref name="onTokens"/> sees every step's new ids.</summary>
    private protected abstract TextResult Generate(InterleavedPrompt prompt, GenerationOptions? options, Action<long[], bool[]>? onTokens,
        CancellationToken cancellationToken);

    /// <summary>Frees the model.</summary>
    private protected abstract void DisposeModel();

    /// <summary>The family's prompt for one image and a question, or a caption when <paramref name="question"/> is null.</summary>
    private protected abstract InterleavedPrompt SingleImagePrompt(DecodedImage image, string? question);

    /// <summary>Captions an image with the family's captioning prompt.</summary>
    public Task<TextResult> CaptionAsync(DecodedImage image, GenerationOptions? options = null, CancellationToken cancellationToken = default) =>
        GenerateAsync(SingleImagePrompt(image, null), options, cancellationToken);

    /// <summary>Answers a question about an image in the family's prompt format.</summary>
    public Task<TextResult> AskAsync(DecodedImage image, string question, GenerationOptions? options = null, CancellationToken cancellationToken = default) =>
        GenerateAsync(SingleImagePrompt(image, question ?? throw new ArgumentNullException(nameof(question))), options, cancellationToken);

    /// <summary>Streams the caption (<paramref name="question"/> null) or the answer; the last chunk carries the whole result.</summary>
    public IAsyncEnumerable<TextChunk> StreamAsync(DecodedImage image, string? question, GenerationOptions? options = null, CancellationToken cancellationToken = default) =>
        StreamAsync(SingleImagePrompt(image, question), options, cancellationToken);

    /// <summary>Continues an interleaved prompt.</summary>
    public Task<TextResult> GenerateAsync(InterleavedPrompt prompt, GenerationOptions? options = null, CancellationToken cancellationToken = default) =>
        _gate.RunAsync(() => Generate(prompt, options, null, cancellationToken), cancellationToken);

    /// <summary>Streams the continuation of an interleaved prompt (greedy or sampling). Stopping the
    /// enumeration stops the generation.</summary>
    public IAsyncEnumerable<string> GenerateStreamAsync(InterleavedPrompt prompt, GenerationOptions? options = null, CancellationToken cancellationToken = default) =>
        GenerationStream.TextAsync(StreamAsync(prompt, options, cancellationToken), cancellationToken);

    /// <summary>Streams text pieces and, last, a chunk with the whole <see cref="TextResult"/> (finish reason,
    /// token counts). Greedy or sampling only; stopping the enumeration stops the generation.</summary>
    public IAsyncEnumerable<TextChunk> StreamAsync(InterleavedPrompt prompt, GenerationOptions? options = null, CancellationToken cancellationToken = default)
    {
        if (BeamsOf(options ?? new GenerationOptions()) > 1)
            throw new NotSupportedException("Streaming needs greedy search or sampling: beam search only knows its result at the end.");
        return GenerationStream.RunAsync(_gate, StreamTokenizer, (onTokens, token) => Generate(prompt, options, onTokens, token), cancellationToken);
    }

    /// <summary>Waits for the call in progress, then frees the model.</summary>
    public void Dispose()
    {
        _gate.Close(DisposeModel);
        GC.SuppressFinalize(this);
    }
}
