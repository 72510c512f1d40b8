using Multimodal.Common;
using Multimodal.Generation;
using Multimodal.Loading;
using Multimodal.Processing;

namespace Multimodal.Idefics;

/// <summary>IDEFICS end to end: interleaved prompt → IDEFICS' image processor and prompt layout (with its
/// image attention mask) → <see cref="IdeficsForVisionText2Text.Generate"/> → text.</summary>
/// <remarks>Thread-safe: concurrent calls run one at a time, so N concurrent calls give what N sequential
/// calls give. Disposing waits for the call in progress.</remarks>
public sealed class IdeficsPipeline(IdeficsForVisionText2Text model, LlamaSentencePieceTokenizer tokenizer, IdeficsImageProcessor imageProcessor) : IDisposable
{
    private readonly SemaphoreSlim _gate = new(1, 1);
    private int _disposed;

    /// <summary>The model.</summary>
    public IdeficsForVisionText2Text Model { get; } = model;

    /// <summary>The tokenizer (with <c>&lt;fake_token_around_image&gt;</c> and <c>&lt;image&gt;</c>).</summary>
    public LlamaSentencePieceTokenizer Tokenizer { get; } = tokenizer;

    /// <summary>The image processor.</summary>
    public IdeficsImageProcessor ImageProcessor { get; } = imageProcessor;

    /// <summary>Loads an IDEFICS folder: config, weights, <c>tokenizer.model</c>, <c>preprocessor_config.json</c>; or a
    /// hub id (HuggingFaceM4/idefics-9b-instruct) in the local Hugging Face cache at <paramref name="revision"/>.</summary>
    public static IdeficsPipeline FromPretrained(string folder, Device? device = null, ScalarType? dtype = null,
        IProgress<LoadProgress>? progress = null, string? revision = null)
    {
        folder = HubCache.Resolve(folder, revision);
        return Ownership.DisposeOnFailure(IdeficsForVisionText2Text.FromPretrained(folder, device, dtype, progress), model =>
        {
            var tokenizer = LlamaSentencePieceTokenizer.FromModel(Path.Combine(folder, "tokenizer.model"),
                ["<fake_token_around_image>", "<image>", "<end_of_utterance>"]);
            return new IdeficsPipeline(model, tokenizer, IdeficsImageProcessor.FromFolder(folder));
        });
    }

    /// <summary>This pipeline as a <see cref="Microsoft.Extensions.AI.IChatClient"/> (the pipeline keeps owning the model).</summary>
    public IdeficsChatClient AsChatClient(string? modelId = null) => new(this, modelId);

    /// <summary>Continues an interleaved prompt.</summary>
    public Task<TextResult> GenerateAsync(InterleavedPrompt prompt, GenerationOptions? options = null, CancellationToken cancellationToken = default) =>
        GenerationStream.RunGatedAsync(_gate, () => Generate(prompt, options, null, cancellationToken), cancellationToken);

    /// <summary>Streams the continuation of an interleaved prompt (greedy or sampling). Stopping the
    /// enumeration stops the generation.</summary>
    public IAsyncEnumerable<string> GenerateStreamAsync(InterleavedPrompt prompt, GenerationOptions? options = null, CancellationToken cancellationToken = default) =>
        GenerationStream.TextAsync(StreamAsync(prompt, options, cancellationToken), cancellationToken);

    /// <summary>Streams text pieces and, last, a chunk with the whole <see cref="TextResult"/> (finish reason,
    /// token counts). Greedy or sampling only; stopping the enumeration stops the generation.</summary>
    public IAsyncEnumerable<TextChunk> StreamAsync(InterleavedPrompt prompt, GenerationOptions? options = null, CancellationToken cancellationToken = default)
    {
        if ((options ?? new GenerationOptions()).WithDefaults(Model.GenerationConfig).NumBeams > 1)
            throw new NotSupportedException("Streaming needs greedy search or sampling: beam search only knows its result at the end.");
        return GenerationStream.RunAsync(_gate, Tokenizer, (onTokens, token) => Generate(prompt, options, onTokens, token), cancellationToken);
    }

    private TextResult Generate(InterleavedPrompt prompt, GenerationOptions? options, Action<long[], bool[]>? onTokens, CancellationToken cancellationToken)
    {
        var images = prompt.Images;
        if (images.Count == 0) throw new ArgumentException("The prompt has no image.", nameof(prompt));
        using var scope = NewDisposeScope();
        long fake = Tokenizer.Encode("<fake_token_around_image>", false)[0], image = Tokenizer.Encode("<image>", false)[0];
        var ids = IdeficsPromptLayout.Ids(prompt, t => Tokenizer.Encode(t, addSpecialTokens: false), Tokenizer.BosTokenId, fake, image);
        var rows = IdeficsPromptLayout.ImageAttentionMask(ids, image, Model.Config.EosTokenId, images.Count);
        var mask = tensor(Enumerable.Range(0, ids.Length).SelectMany(t => Enumerable.Range(0, images.Count).Select(k => rows[t, k])).ToArray(),
            [1, ids.Length, images.Count]);
        var pixels = ImageProcessor.Preprocess(images).unsqueeze(0);                      // (1, N, 3, H, W)
        using var output = Model.Generate(tensor(ids).unsqueeze(0), ones(1, ids.Length, ScalarType.Int64), pixels, mask,
            options, t => Tokenizer.Decode(t), onTokens, cancellationToken);
        var row = output.Sequences[0];
        return new TextResult(Tokenizer.Decode(row.Skip(ids.Length)).Trim(), row, output.Scores[0], output.FinishReasons[0], ids.Length, output.NewTokens[0]);
    }

    /// <summary>Waits for the call in progress, then frees the model.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 1) return;
        _gate.Wait();
        Model.Dispose();
    }
}
