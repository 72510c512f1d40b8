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
    private FacadeBatcher<InterleavedPrompt>? _batcher;
    private readonly object _batcherLock = new();

    private protected InterleavedPipeline()
    {
    }

    /// <summary>Dynamic batching of concurrent calls (a server's requests), streamed or not: calls with equal options and as
    /// many images that arrive together run as one left-padded batch, each row getting what it gets alone. Null: calls
    /// run one at a time.</summary>
    public BatchingOptions? Batching { get; init; }

    /// <summary>With <see cref="Batching"/>: the most rows one batch has had so far (a diagnostic).</summary>
    public int LargestBatch => _batcher?.LargestBatch ?? 0;

    /// <summary>Decodes the stream.</summary>
    private protected abstract ITextTokenizer StreamTokenizer { get; }

    /// <summary>The call for <paramref name="options"/>: the model's generation defaults applied once, validated, with
    /// the tokenizer's decoder for stop strings.</summary>
    private protected abstract GenerationCall Call(GenerationOptions? options, CancellationToken cancellationToken);

    /// <summary>Runs the model on a batch of prompts (left-padded; every prompt with as many images); each row's result is
    /// what it gives alone. <paramref name="onRowResult"/> gets each row that ends before the batch.</summary>
    private protected abstract IReadOnlyList<TextResult> Generate(IReadOnlyList<InterleavedPrompt> prompts, GenerationCall call,
        Action<int, TextResult>? onRowResult);

    /// <summary>Frees the model.</summary>
    private protected abstract void DisposeModel();

    /// <summary>The family's prompt for one image and a question, or a caption when <paramref name="question"/> is null.</summary>
    private protected abstract InterleavedPrompt SingleImagePrompt(DecodedImage image, string? question);

    private FacadeBatcher<InterleavedPrompt> Batcher()
    {
        lock (_batcherLock)
            return _batcher ??= new(Batching!, _gate, Call, Generate, prompt => prompt.Images.Count);
    }

    /// <summary>Continues an interleaved prompt.</summary>
    public Task<TextResult> GenerateAsync(InterleavedPrompt prompt, GenerationOptions? options = null, CancellationToken cancellationToken = default) =>
        Batching is null
            ? _gate.RunAsync(() => Generate([prompt], Call(options, cancellationToken), null)[0], cancellationToken)
            : Batcher().RunAsync(prompt, options ?? new GenerationOptions(), cancellationToken);

    /// <summary>Continues a batch of prompts, each with as many images; each row gets what it gets alone.</summary>
    public Task<IReadOnlyList<TextResult>> GenerateAsync(IReadOnlyList<InterleavedPrompt> prompts, GenerationOptions? options = null,
        CancellationToken cancellationToken = default) =>
        _gate.RunAsync(() => Generate(prompts, Call(options, cancellationToken), null), cancellationToken);

    /// <summary>Streams the continuation of an interleaved prompt (greedy or sampling). Stopping the
    /// enumeration stops the generation.</summary>
    public IAsyncEnumerable<string> GenerateStreamAsync(InterleavedPrompt prompt, GenerationOptions? options = null, CancellationToken cancellationToken = default) =>
        GenerationStream.TextAsync(StreamAsync(prompt, options, cancellationToken), cancellationToken);

    /// <summary>Streams text pieces and, last, a chunk with the whole <see cref="TextResult"/> (finish reason,
    /// token counts). Greedy or sampling only; stopping the enumeration stops the generation.</summary>
    public IAsyncEnumerable<TextChunk> StreamAsync(InterleavedPrompt prompt, GenerationOptions? options = null, CancellationToken cancellationToken = default)
    {
        options ??= new GenerationOptions();
        if (Call(options, default).Options.NumBeams > 1)
            throw new NotSupportedException("Streaming needs greedy search or sampling: beam search only knows its result at the end.");
        if (Batching is not null) return Batcher().StreamAsync(StreamTokenizer, prompt, options, cancellationToken);
        return GenerationStream.RunAsync(_gate, StreamTokenizer,
            (onTokens, token) => Generate([prompt], Call(options, token) with { OnTokens = onTokens }, null)[0], cancellationToken);
    }

    /// <summary>Captions an image with the family's captioning prompt.</summary>
    public Task<TextResult> CaptionAsync(DecodedImage image, GenerationOptions? options = null, CancellationToken cancellationToken = default) =>
        GenerateAsync(SingleImagePrompt(image, null), options, cancellationToken);

    /// <summary>Answers a question about an image in the family's prompt format.</summary>
    public Task<TextResult> AskAsync(DecodedImage image, string question, GenerationOptions? options = null, CancellationToken cancellationToken = default) =>
        GenerateAsync(SingleImagePrompt(image, question ?? throw new ArgumentNullException(nameof(question))), options, cancellationToken);

    /// <summary>Captions a batch of images with the family's captioning prompt.</summary>
    public Task<IReadOnlyList<TextResult>> CaptionAsync(IReadOnlyList<DecodedImage> images, GenerationOptions? options = null,
        CancellationToken cancellationToken = default) =>
        GenerateAsync(images.Select(image => SingleImagePrompt(image, null)).ToList(), options, cancellationToken);

    /// <summary>Answers one question per image, as one batch.</summary>
    public Task<IReadOnlyList<TextResult>> AskAsync(IReadOnlyList<DecodedImage> images, IReadOnlyList<string> questions,
        GenerationOptions? options = null, CancellationToken cancellationToken = default)
    {
        if (images.Count != questions.Count)
            throw new ArgumentException($"{images.Count} images for {questions.Count} questions: give one question per image.", nameof(questions));
        return GenerateAsync(images.Select((image, i) => SingleImagePrompt(image, questions[i])).ToList(), options, cancellationToken);
    }

    /// <summary>Streams the caption (<paramref name="question"/> null) or the answer; the last chunk carries the whole result.</summary>
    public IAsyncEnumerable<TextChunk> StreamAsync(DecodedImage image, string? question, GenerationOptions? options = null, CancellationToken cancellationToken = default) =>
        StreamAsync(SingleImagePrompt(image, question), options, cancellationToken);

    /// <summary>The result of row <paramref name="row"/> of a batch whose prompts were left-padded to one width: the ids
    /// without that row's padding, the text of its new tokens.</summary>
    private protected static TextResult RowResult(GenerationOutput output, int row, int width, int padding, ITextTokenizer tokenizer)
    {
        var ids = output.Sequences[row];
        var newTokens = ids[width..(width + output.NewTokens[row])];
        return new TextResult(tokenizer.Decode(newTokens).Trim(), ids[padding..(width + output.NewTokens[row])], output.Scores[row],
            output.FinishReasons[row], output.InputTokens[row], output.NewTokens[row]);
    }

    /// <summary>Left-pads the rows to one width: (ids, mask) as (B, W) int64 tensors and each row's padding.</summary>
    private protected static (Tensor Ids, Tensor Mask, int[] Padding) LeftPad(IReadOnlyList<long[]> rows, long pad)
    {
        int width = rows.Max(r => r.Length);
        var padding = rows.Select(r => width - r.Length).ToArray();
        var ids = rows.SelectMany((r, i) => Enumerable.Repeat(pad, padding[i]).Concat(r)).ToArray();
        var mask = rows.SelectMany((r, i) => Enumerable.Repeat(0L, padding[i]).Concat(Enumerable.Repeat(1L, r.Length))).ToArray();
        return (tensor(ids, [rows.Count, width]), tensor(mask, [rows.Count, width]), padding);
    }

    /// <summary>Waits for the call in progress, then frees the model.</summary>
    public void Dispose()
    {
        lock (_batcherLock) _batcher?.Dispose();
        _gate.Close(DisposeModel);
        GC.SuppressFinalize(this);
    }
}
