using Multimodal.Common;
using Multimodal.Generation;
using Multimodal.Loading;
using Multimodal.Processing;

namespace Multimodal.InstructBlip;

/// <summary>The one-stop InstructBLIP API: load a checkpoint folder (Salesforce/instructblip-vicuna-7b, -flan-t5-xl, …),
/// then ask about images — the instruction goes to both the Q-Former and the language model, as upstream's processor
/// sends it — batched or streamed.</summary>
/// <remarks>Thread-safe like <see cref="Blip2.Blip2Captioner"/>: calls run one at a time, so N concurrent calls give what
/// N sequential calls give; disposing waits for the call in progress.</remarks>
/// <example>
/// <code>
/// using var model = InstructBlipCaptioner.FromPretrained("instructblip-vicuna-7b");
/// var answer = await model.AskAsync("photo.jpg", "What is unusual about this image?");
/// </code>
/// </example>
public sealed class InstructBlipCaptioner : IVisionLanguageModel
{
    private readonly CallGate _gate = new();
    private FacadeBatcher<(DecodedImage Image, string Prompt)>? _batcher;
    private readonly object _batcherLock = new();

    /// <summary>The model the façade drives: its forward pass, generation from explicit tensors, its generation defaults.</summary>
    public InstructBlipForConditionalGeneration Model { get; }

    /// <summary>Image processor and both tokenizers.</summary>
    public InstructBlipProcessor Processor { get; }

    /// <summary>Dynamic batching of concurrent single-image calls (a server's requests), streamed or not, as
    /// <see cref="Blip2.Blip2Captioner.Batching"/>: each row gets what it gets alone. Null: calls run one at a time.</summary>
    public BatchingOptions? Batching { get; init; }

    /// <summary>With <see cref="Batching"/>: the most rows one batch has had so far (a diagnostic).</summary>
    public int LargestBatch => _batcher?.LargestBatch ?? 0;

    /// <summary>Upper bound on decoded image pixels (decompression bombs are refused).</summary>
    public long MaxImagePixels { get; init; } = ImageDecoder.DefaultMaxPixels;

    /// <summary>Combines a loaded model and its processor.</summary>
    public InstructBlipCaptioner(InstructBlipForConditionalGeneration model, InstructBlipProcessor processor)
    {
        Model = model;
        Processor = processor;
    }

    /// <summary>Loads an InstructBLIP folder (config, weights, generation defaults, processor and tokenizer files), or a
    /// hub id in the local Hugging Face cache.</summary>
    /// <exception cref="ConfigException">a config file is malformed or not InstructBLIP.</exception>
    /// <exception cref="CheckpointException">the weights are malformed or do not match the config.</exception>
    /// <param name="folder">a checkpoint folder, or a hub id in the local Hugging Face cache.</param>
    /// <param name="device">CPU (default) or CUDA.</param>
    /// <param name="dtype">Float32 (default), Float16 or BFloat16.</param>
    /// <param name="progress">receives a report after each weight tensor.</param>
    /// <param name="revision">with a hub id: the branch, tag or commit (default main).</param>
    /// <param name="quantization">weight-only quantization of the language model (see <see cref="WeightQuantization"/>).</param>
    /// <param name="batching">dynamic batching of concurrent calls (see <see cref="Batching"/>); null: none.</param>
    public static InstructBlipCaptioner FromPretrained(string folder, Device? device = null, ScalarType? dtype = null,
        IProgress<LoadProgress>? progress = null, string? revision = null, BatchingOptions? batching = null,
        WeightQuantization quantization = WeightQuantization.None)
    {
        batching?.Validate();
        string resolved = HubCache.Resolve(folder, revision);
        return Ownership.DisposeOnFailure(InstructBlipForConditionalGeneration.FromPretrained(resolved, device, dtype, progress, quantization: quantization),
            model => new InstructBlipCaptioner(model, InstructBlipProcessor.FromFolder(resolved, model.Config)) { Batching = batching });
    }

    private FacadeBatcher<(DecodedImage Image, string Prompt)> Batcher()
    {
        lock (_batcherLock)
            return _batcher ??= new(Batching!, _gate, Call,
                (rows, call, onRowResult) => Generate(rows.Select(r => r.Image).ToList(), rows.Select(r => r.Prompt).ToList(), call, onRowResult));
    }

    /// <summary>This captioner as a <see cref="Microsoft.Extensions.AI.IChatClient"/> (the captioner keeps owning the model).</summary>
    public InstructBlipChatClient AsChatClient(string? modelId = null) => new(this, modelId);

    /// <summary>The captioning instruction of the InstructBLIP paper's templates, used when none is given.</summary>
    public const string CaptionInstruction = "A short image caption:";

    /// <summary>Captions an image (the instruction <see cref="CaptionInstruction"/>).</summary>
    public Task<TextResult> CaptionAsync(DecodedImage image, GenerationOptions? options = null, CancellationToken cancellationToken = default) =>
        AskAsync(image, CaptionInstruction, options, cancellationToken);

    IAsyncEnumerable<TextChunk> IVisionLanguageModel.StreamAsync(DecodedImage image, string? question, GenerationOptions? options, CancellationToken cancellationToken) =>
        StreamAsync(image, question ?? CaptionInstruction, options, cancellationToken);

    Microsoft.Extensions.AI.IChatClient IVisionLanguageModel.AsChatClient(string? modelId) => AsChatClient(modelId);

    /// <summary>Captions a batch of images (the instruction <see cref="CaptionInstruction"/>).</summary>
    public Task<IReadOnlyList<TextResult>> CaptionAsync(IReadOnlyList<DecodedImage> images, GenerationOptions? options = null,
        CancellationToken cancellationToken = default) =>
        AskAsync(images, images.Select(_ => CaptionInstruction).ToList(), options, cancellationToken);

    ITextTokenizer IVisionLanguageModel.Tokenizer => Processor.Tokenizer;

    int? IVisionLanguageModel.ContextLength => Model.Config.TextConfig.ContextLength;

    /// <summary>Answers an instruction about an image file ("Describe this image in detail.", a question…).</summary>
    public Task<TextResult> AskAsync(string imagePath, string instruction, GenerationOptions? options = null, CancellationToken cancellationToken = default) =>
        AskAsync(ImageDecoder.Decode(imagePath, MaxImagePixels), instruction, options, cancellationToken);

    /// <summary>Answers an instruction about a decoded image.</summary>
    public async Task<TextResult> AskAsync(DecodedImage image, string instruction, GenerationOptions? options = null, CancellationToken cancellationToken = default) =>
        Batching is null
            ? (await AskAsync([image], [instruction], options, cancellationToken).ConfigureAwait(false))[0]
            : await Batcher().RunAsync((image, instruction), options ?? new GenerationOptions(), cancellationToken).ConfigureAwait(false);

    /// <summary>Answers a batch (one instruction per image); each row gets what it gets alone.</summary>
    public Task<IReadOnlyList<TextResult>> AskAsync(IReadOnlyList<DecodedImage> images, IReadOnlyList<string> instructions,
        GenerationOptions? options = null, CancellationToken cancellationToken = default) =>
        _gate.RunAsync(() => Generate(images, instructions, Call(options, cancellationToken)), cancellationToken);

    /// <summary>Streams text pieces and, last, a chunk with the whole <see cref="TextResult"/>. Greedy or sampling only;
    /// stopping the enumeration stops the generation.</summary>
    public IAsyncEnumerable<TextChunk> StreamAsync(DecodedImage image, string instruction, GenerationOptions? options = null, CancellationToken cancellationToken = default)
    {
        options ??= new GenerationOptions();
        if (options.WithDefaults(Model.GenerationConfig).NumBeams > 1)
            throw new NotSupportedException("Streaming needs greedy search or sampling: beam search only knows its result at the end.");
        if (Batching is not null) return Batcher().StreamAsync(Processor.Tokenizer, (image, instruction), options, cancellationToken);
        return GenerationStream.RunAsync(_gate, Processor.Tokenizer,
            (onTokens, token) => Generate([image], [instruction], Call(options, token) with { OnTokens = onTokens })[0], cancellationToken);
    }

    // The one place a call's options meet the checkpoint's defaults (and are validated).
    private GenerationCall Call(GenerationOptions? options, CancellationToken cancellationToken) =>
        GenerationCall.Resolve(options, Model.GenerationConfig, cancellationToken) with { Decode = ids => Processor.Tokenizer.Decode(ids) };

    private IReadOnlyList<TextResult> Generate(IReadOnlyList<DecodedImage> images, IReadOnlyList<string> instructions, GenerationCall call,
        Action<int, TextResult>? onRowResult = null)
    {
        call = call.AnsweringRows(onRowResult, (_, alone) => TextResult.FromBatch(alone, Processor.Tokenizer, beams: false)[0]);
        using var scope = NewDisposeScope();
        using var inputs = Processor.Process(images, instructions);
        using var output = Model.Generate(inputs.PixelValues, inputs.QformerInputIds, inputs.QformerAttentionMask, inputs.InputIds, inputs.AttentionMask, call);
        return TextResult.FromBatch(output, Processor.Tokenizer, beams: call.Options.NumBeams > 1);
    }

    /// <summary>Waits for the call in progress, then frees the model.</summary>
    public void Dispose()
    {
        lock (_batcherLock) _batcher?.Dispose();
        _gate.Close(Model.Dispose);
    }

}
