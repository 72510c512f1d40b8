using Multimodal.Common;
using Multimodal.Generation;
using Multimodal.Loading;
using Multimodal.Processing;

namespace Multimodal.Blip2;

/// <summary>The one-stop BLIP-2 API: load a checkpoint folder, then caption images or answer questions
/// about them, batched or streamed.</summary>
/// <remarks>Thread-safe: calls on one instance may come from any number of threads; they run one at a time
/// (each generation uses both the model and the cores fully), so N concurrent calls give exactly what N
/// sequential calls give. Disposing waits for the call in progress.</remarks>
/// <example>
/// <code>
/// using var blip2 = Blip2Captioner.FromPretrained("blip2-opt-2.7b");
/// var caption = await blip2.CaptionAsync("cat.jpg");
/// var answer = await blip2.AskAsync("cat.jpg", "what is the cat lying on?");
/// </code>
/// </example>
public sealed class Blip2Captioner : IVisionLanguageModel
{
    private readonly CallGate _gate = new();
    private FacadeBatcher<(DecodedImage Image, string Prompt)>? _batcher;
    private readonly object _batcherLock = new();

    /// <summary>The model the façade drives: its forward pass, generation from explicit tensors, its generation defaults.</summary>
    public Blip2ForConditionalGeneration Model { get; }

    /// <summary>Image processor and tokenizer.</summary>
    public Blip2Processor Processor { get; }

    /// <summary>Upper bound on decoded image pixels (decompression bombs are refused).</summary>
    public long MaxImagePixels { get; init; } = ImageDecoder.DefaultMaxPixels;

    /// <summary>Dynamic batching of concurrent single-image calls (a server's requests), streamed or not: calls with
    /// equal options that arrive together run as one left-padded batch, each row getting what it gets alone, and a
    /// streamed row receives its own tokens as they come. Null (default): every call runs on its own. Beam search
    /// calls always run on their own.</summary>
    public BatchingOptions? Batching { get; init; }

    /// <summary>With <see cref="Batching"/>: the most rows one batch has had so far (a diagnostic).</summary>
    public int LargestBatch => _batcher?.LargestBatch ?? 0;

    /// <summary>Combines a loaded model and its processor.</summary>
    public Blip2Captioner(Blip2ForConditionalGeneration model, Blip2Processor processor)
    {
        Model = model;
        Processor = processor;
    }

    /// <summary>Loads a BLIP-2 checkpoint: config, weights, generation defaults, preprocessor config and tokenizer files.</summary>
    /// <param name="folder">a checkpoint folder, or a hub id (Salesforce/blip2-opt-2.7b) in the local Hugging Face cache.</param>
    /// <param name="device">CPU (default) or CUDA; CUDA needs a TorchSharp CUDA backend package.</param>
    /// <param name="dtype">Float32 (default), Float16 or BFloat16.</param>
    /// <param name="progress">receives a report after each weight tensor.</param>
    /// <param name="revision">with a hub id: the branch, tag or commit (default main).</param>
    /// <param name="quantization">weight-only quantization of the language model (see <see cref="WeightQuantization"/>).</param>
    /// <param name="batching">dynamic batching of concurrent calls (see <see cref="Batching"/>); null: none.</param>
    /// <exception cref="DirectoryNotFoundException">neither a folder nor a cached model (the message says where it looked).</exception>
    /// <exception cref="ConfigException">a config file is malformed or not BLIP-2.</exception>
    /// <exception cref="CheckpointException">the weights are malformed or do not match the config.</exception>
    /// <exception cref="TorchSharpLoadException">TorchSharp's native library cannot be loaded.</exception>
    public static Blip2Captioner FromPretrained(string folder, Device? device = null, ScalarType? dtype = null,
        IProgress<LoadProgress>? progress = null, string? revision = null, BatchingOptions? batching = null,
        WeightQuantization quantization = WeightQuantization.None)
    {
        batching?.Validate();
        string resolved = HubCache.Resolve(folder, revision);
        return Ownership.DisposeOnFailure(Blip2ForConditionalGeneration.FromPretrained(resolved, device, dtype, progress, quantization: quantization),
            model => new Blip2Captioner(model, Blip2Processor.FromFolder(resolved, model.Config)) { Batching = batching });
    }

    /// <summary>This captioner as a <see cref="Microsoft.Extensions.AI.IChatClient"/> (the captioner keeps owning the model).</summary>
    public Blip2ChatClient AsChatClient(string? modelId = null) => new(this, modelId);

    /// <summary>The BLIP-2 VQA prompt for a question.</summary>
    public static string QuestionPrompt(string question) => $"Question: {question} Answer:";

    /// <summary>Captions an image file; <paramref name="prompt"/> optionally starts the caption ("a photo of").</summary>
    public Task<TextResult> CaptionAsync(string imagePath, string prompt = "", GenerationOptions? options = null, CancellationToken cancellationToken = default) =>
        CaptionAsync(ImageDecoder.Decode(imagePath, MaxImagePixels), prompt, options, cancellationToken);

    /// <summary>Captions an image file with these options (<c>CaptionAsync(path, options)</c>).</summary>
    public Task<TextResult> CaptionAsync(string imagePath, GenerationOptions generationOptions, CancellationToken cancellationToken = default) =>
        CaptionAsync(imagePath, "", generationOptions, cancellationToken);

    /// <summary>Captions a decoded image.</summary>
    public async Task<TextResult> CaptionAsync(DecodedImage image, string prompt = "", GenerationOptions? options = null, CancellationToken cancellationToken = default)
    {
        if (Batching is null) return (await CaptionAsync([image], [prompt], options, cancellationToken).ConfigureAwait(false))[0];
        return await Batcher().RunAsync((image, prompt), options ?? new GenerationOptions(), cancellationToken).ConfigureAwait(false);
    }

    private FacadeBatcher<(DecodedImage Image, string Prompt)> Batcher()
    {
        lock (_batcherLock)
            return _batcher ??= new(Batching!, _gate, Call,
                (rows, call, onRowResult) => Generate(rows.Select(r => r.Image).ToList(), rows.Select(r => r.Prompt).ToList(), call, onRowResult));
    }

    /// <summary>Captions a decoded image with these options (<c>CaptionAsync(image, options)</c>).</summary>
    public Task<TextResult> CaptionAsync(DecodedImage image, GenerationOptions generationOptions, CancellationToken cancellationToken = default) =>
        CaptionAsync(image, "", generationOptions, cancellationToken);

    /// <summary>Answers a question about an image file (prompt "Question: {q} Answer:").</summary>
    public Task<TextResult> AskAsync(string imagePath, string question, GenerationOptions? options = null, CancellationToken cancellationToken = default) =>
        CaptionAsync(imagePath, QuestionPrompt(question), options, cancellationToken);

    /// <summary>Answers a question about a decoded image.</summary>
    public Task<TextResult> AskAsync(DecodedImage image, string question, GenerationOptions? options = null, CancellationToken cancellationToken = default) =>
        CaptionAsync(image, QuestionPrompt(question), options, cancellationToken);

    /// <summary>Captions a batch (one prompt per image). Rows are left-padded; each row's result is
    /// what it would be alone, up to float rounding.</summary>
    public Task<IReadOnlyList<TextResult>> CaptionAsync(IReadOnlyList<DecodedImage> images, IReadOnlyList<string> prompts,
        GenerationOptions? options = null, CancellationToken cancellationToken = default) =>
        _gate.RunAsync(() => Generate(images, prompts, Call(options, cancellationToken)), cancellationToken);

    /// <summary>Streams a caption as it is generated, in decoded pieces (a character split across tokens
    /// comes out whole). Greedy or sampling only. Stopping the enumeration stops the generation.</summary>
    public IAsyncEnumerable<string> CaptionStreamAsync(DecodedImage image, string prompt = "", GenerationOptions? options = null,
        CancellationToken cancellationToken = default) =>
        GenerationStream.TextAsync(StreamRawPromptAsync(image, prompt, options, cancellationToken), cancellationToken);

    /// <summary>Streams the caption of an image file.</summary>
    public IAsyncEnumerable<string> CaptionStreamAsync(string imagePath, string prompt = "", GenerationOptions? options = null,
        CancellationToken cancellationToken = default) =>
        CaptionStreamAsync(ImageDecoder.Decode(imagePath, MaxImagePixels), prompt, options, cancellationToken);

    /// <summary>Streams the answer to a question about an image.</summary>
    public IAsyncEnumerable<string> AskStreamAsync(DecodedImage image, string question, GenerationOptions? options = null,
        CancellationToken cancellationToken = default) => CaptionStreamAsync(image, QuestionPrompt(question), options, cancellationToken);

    /// <summary>Streams the answer to a question about an image file.</summary>
    public IAsyncEnumerable<string> AskStreamAsync(string imagePath, string question, GenerationOptions? options = null,
        CancellationToken cancellationToken = default) => CaptionStreamAsync(imagePath, QuestionPrompt(question), options, cancellationToken);

    /// <summary>The most new tokens <paramref name="prompt"/> leaves room for (queries, BOS and prompt tokens
    /// take positions), or null when the language model has no position limit.</summary>
    public int? MaxNewTokensFor(string prompt) =>
        Model.NewTokenBudget((Model.Config.ImageTokenIndex is null ? Model.Config.NumQueryTokens : 0) + Processor.PromptPositions(prompt));

    /// <summary>Streams the caption (<paramref name="question"/> null) or the answer ("Question: {q} Answer:") in text
    /// pieces and, last, a chunk with the whole <see cref="TextResult"/>. Greedy or sampling only; stopping the enumeration
    /// stops the generation.</summary>
    public IAsyncEnumerable<TextChunk> StreamAsync(DecodedImage image, string? question = null, GenerationOptions? options = null,
        CancellationToken cancellationToken = default) =>
        StreamRawPromptAsync(image, question is null ? "" : QuestionPrompt(question), options, cancellationToken);

    /// <summary><see cref="StreamAsync(DecodedImage, string?, GenerationOptions?, CancellationToken)"/> with the text the
    /// model continues given as is (<paramref name="rawPrompt"/>: "a photo of", or a whole "Question: … Answer:").</summary>
    public IAsyncEnumerable<TextChunk> StreamRawPromptAsync(DecodedImage image, string rawPrompt, GenerationOptions? options = null,
        CancellationToken cancellationToken = default)
    {
        string prompt = rawPrompt;
        options ??= new GenerationOptions();
        if (options.WithDefaults(Model.GenerationConfig).NumBeams > 1)
            throw new NotSupportedException("Streaming needs greedy search or sampling: beam search only knows its result at the end.");
        if (Batching is not null) return Batcher().StreamAsync(Processor.Tokenizer, (image, prompt), options, cancellationToken);
        return GenerationStream.RunAsync(_gate, Processor.Tokenizer,
            (onTokens, token) => Generate([image], [prompt], Call(options, token) with { OnTokens = onTokens })[0], cancellationToken);
    }

    // The one place a call's options meet the checkpoint's defaults (and are validated).
    private GenerationCall Call(GenerationOptions? options, CancellationToken cancellationToken) =>
        GenerationCall.Resolve(options, Model.GenerationConfig, cancellationToken) with { Decode = ids => Processor.Tokenizer.Decode(ids) };

    private IReadOnlyList<TextResult> Generate(IReadOnlyList<DecodedImage> images, IReadOnlyList<string> prompts, GenerationCall call,
        Action<int, TextResult>? onRowResult = null)
    {
        call = call.AnsweringRows(onRowResult, (_, alone) => TextResult.FromBatch(alone, Processor.Tokenizer, beams: false)[0]);
        using var scope = NewDisposeScope();
        using var inputs = Processor.Process(images, prompts);
        using var output = Model.Generate(inputs.PixelValues, inputs.InputIds, inputs.AttentionMask, call);
        return TextResult.FromBatch(output, Processor.Tokenizer, beams: call.Options.NumBeams > 1);
    }

    Task<TextResult> IVisionLanguageModel.CaptionAsync(DecodedImage image, GenerationOptions? options, CancellationToken cancellationToken) =>
        CaptionAsync(image, "", options, cancellationToken);

    Microsoft.Extensions.AI.IChatClient IVisionLanguageModel.AsChatClient(string? modelId) => AsChatClient(modelId);

    Task<IReadOnlyList<TextResult>> IVisionLanguageModel.CaptionAsync(IReadOnlyList<DecodedImage> images, GenerationOptions? options,
        CancellationToken cancellationToken) => CaptionAsync(images, images.Select(_ => "").ToList(), options, cancellationToken);

    Task<IReadOnlyList<TextResult>> IVisionLanguageModel.AskAsync(IReadOnlyList<DecodedImage> images, IReadOnlyList<string> questions,
        GenerationOptions? options, CancellationToken cancellationToken) =>
        CaptionAsync(images, questions.Select(QuestionPrompt).ToList(), options, cancellationToken);

    ITextTokenizer IVisionLanguageModel.Tokenizer => Processor.Tokenizer;

    int? IVisionLanguageModel.ContextLength => Model.Config.TextConfig.ContextLength;

    /// <summary>Waits for the call in progress, then frees the model.</summary>
    public void Dispose()
    {
        lock (_batcherLock) _batcher?.Dispose();
        _gate.Close(Model.Dispose);
    }

}
