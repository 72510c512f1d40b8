using Multimodal.Common;
using Multimodal.Generation;
using Multimodal.Language;
using Multimodal.Loading;
using Multimodal.QFormer;
using Multimodal.Vision;

namespace Multimodal.Blip2;

/// <summary>BLIP-2 for image-conditioned text (Li et al. 2023, "BLIP-2: Bootstrapping Language-Image
/// Pre-training with Frozen Image Encoders and Large Language Models"), mirroring transformers v4.45.1
/// <c>Blip2ForConditionalGeneration</c> (modeling_blip_2.py): frozen ViT → Q-Former with learned query
/// tokens → linear projection → frozen language model.</summary>
/// <remarks>
/// Field names mirror the published keys (<c>vision_model</c>, <c>query_tokens</c>, <c>qformer</c>,
/// <c>language_projection</c>, <c>language_model</c>), so <c>state_dict()</c> is the published name list.
/// Load a checkpoint folder with <see cref="FromPretrained"/>.
/// </remarks>
public sealed class Blip2ForConditionalGeneration : nn.Module
{
    [ComponentName(Name = "vision_model")] private readonly Blip2VisionModel _visionModel;
    [ComponentName(Name = "query_tokens")] private readonly Parameter _queryTokens;
    [ComponentName(Name = "qformer")] private readonly QFormerModel _qformer;
    [ComponentName(Name = "language_projection")] private readonly Linear _languageProjection;
    [ComponentName(Name = "language_model")] private readonly nn.Module _languageModel;

    /// <summary>The configuration the model was built from.</summary>
    public Blip2Config Config { get; }

    /// <summary>The device the parameters were built on (CPU or CUDA); inputs are moved to it.</summary>
    public Device Device { get; }

    /// <summary>The parameters' dtype (float32, float16 or bfloat16); inputs are cast to it.</summary>
    public ScalarType DType { get; }

    private readonly QueryPrefixedLanguageModel _bridge;

    internal ICausalLanguageModel LanguageModel => _bridge.LanguageModel;

    /// <summary>Builds the model with uninitialised-for-inference weights directly on
    /// <paramref name="device"/> in <paramref name="dtype"/> (default CPU, float32).</summary>
    /// <exception cref="NotSupportedException">the text model type, device or dtype is not supported.</exception>
    public Blip2ForConditionalGeneration(Blip2Config config, Device? device = null, ScalarType? dtype = null)
        : base(nameof(Blip2ForConditionalGeneration))
    {
        Config = config.Normalize();
        Device = DeviceCheck.Resolve(device);
        DType = DeviceCheck.Resolve(dtype);
        config = Config;
        _visionModel = new Blip2VisionModel(config.VisionConfig, Device, DType);
        _queryTokens = new Parameter(
            zeros(1, config.NumQueryTokens, config.QformerConfig.HiddenSize, dtype: DType, device: Device), requires_grad: false);
        _qformer = new QFormerModel(config.QformerConfig, Device, DType);
        _languageModel = QueryPrefixedLanguageModel.Build(config.TextConfig, "BLIP-2", Device, DType, "opt", "t5");
        _languageProjection = Uninitialized.Linear(config.QformerConfig.HiddenSize, QueryPrefixedLanguageModel.Width(config.TextConfig), device: Device, dtype: DType);
        _bridge = new QueryPrefixedLanguageModel(_languageModel, config.TextConfig, config.NumQueryTokens, config.ImageTokenIndex, Device);
        RegisterComponents();
        eval();
        foreach (var p in parameters()) p.requires_grad = false;
        if (config.TextConfig.ModelType == "t5" && DType == ScalarType.Float16)
        {
            // T5 activations overflow float16 (upstream clamps and still degrades); bfloat16 has the range.
            const string warning = "Flan-T5 in float16 overflows (as in transformers): use BFloat16 or Float32.";
            Warnings = [warning];
            System.Diagnostics.Trace.TraceWarning(warning);
        }
    }

    /// <summary>The checkpoint's <c>generation_config.json</c> defaults, applied to every option a caller
    /// leaves unset (null when the model was not loaded from a folder, or the folder has none).</summary>
    public GenerationConfig? GenerationConfig { get; init; }

    /// <summary>Advice about the chosen settings (e.g. float16 with T5), also sent to <see cref="System.Diagnostics.Trace"/>.</summary>
    public IReadOnlyList<string> Warnings { get; } = [];

    /// <summary>Loads a published checkpoint folder (<c>config.json</c> + <c>model.safetensors</c> or
    /// sharded safetensors with their index) straight into <paramref name="dtype"/> on
    /// <paramref name="device"/>, one tensor at a time.</summary>
    /// <param name="folder">the checkpoint folder, e.g. a download of Salesforce/blip2-opt-2.7b.</param>
    /// <param name="device">CPU (default) or CUDA.</param>
    /// <param name="dtype">Float32 (default), Float16 or BFloat16.</param>
    /// <param name="progress">receives a report after each tensor.</param>
    /// <param name="revision">with a hub id: the branch, tag or commit in the local Hugging Face cache (default main).</param>
    /// <param name="quantization">weight-only quantization of the language model, applied tensor by tensor as the float
    /// checkpoint loads (see <see cref="WeightQuantization"/>); a folder saved quantized loads as saved.</param>
    /// <exception cref="ConfigException">config.json or generation_config.json is malformed, or not BLIP-2.</exception>
    /// <exception cref="CheckpointException">a weight file is malformed or does not match the model;
    /// the message lists every missing, unexpected and mis-shaped tensor.</exception>
    /// <exception cref="DirectoryNotFoundException">neither a folder nor a cached hub model.</exception>
    /// <exception cref="TorchSharpLoadException">TorchSharp's native library cannot be loaded.</exception>
    public static Blip2ForConditionalGeneration FromPretrained(string folder, Device? device = null,
        ScalarType? dtype = null, IProgress<LoadProgress>? progress = null, string? revision = null,
        WeightQuantization quantization = WeightQuantization.None)
    {
        using var checkpoint = CheckpointFolder.Open(HubCache.Resolve(folder, revision));
        var config = Blip2Config.Load(checkpoint.ConfigPath);
        config.RequireArchitecture(checkpoint.ConfigPath, nameof(Blip2ForConditionalGeneration), "Blip2ForConditionalGeneration", "Blip2Model");
        var defaults = GenerationConfig.FromFolder(checkpoint.Folder);
        var quantized = config.QuantizationConfig?.Kind(checkpoint.ConfigPath) ?? quantization;
        return StateDictLoader.BuildAndLoad(d => new Blip2ForConditionalGeneration(config, d, dtype) { GenerationConfig = defaults }.WithQuantizedLayout(quantized),
            device, checkpoint, Blip2KeyMap.For(config.Normalize()), nameof(Blip2ForConditionalGeneration), progress);
    }

    /// <summary>The most new tokens a prompt of <paramref name="promptPositions"/> language-model positions
    /// (queries included in the original layout) leaves room for, or null when the language model has no
    /// position limit (T5's relative positions). OPT's learned positions end at <c>max_position_embeddings</c>;
    /// the last new token is never fed back, so it needs no position.</summary>
    public int? NewTokenBudget(int promptPositions) => _bridge.NewTokenBudget(promptPositions);

    /// <summary>Runs the whole model once (no generation) and returns every step's output.</summary>
    /// <param name="pixelValues">(B, 3, H, W) preprocessed images.</param>
    /// <param name="inputIds">(B, T) int64 prompt ids; in the <c>image_token_index</c> layout they include
    /// <c>num_query_tokens</c> image tokens per row.</param>
    /// <param name="attentionMask">(B, T) 1 for real tokens, 0 for (left) padding; all ones when null.</param>
    /// <param name="decoderInputIds">T5 only: (B, Td) teacher-forced decoder ids (default: the start token).</param>
    public Blip2ForwardOutput Forward(Tensor pixelValues, Tensor inputIds, Tensor? attentionMask = null, Tensor? decoderInputIds = null)
    {
        using var inference = inference_mode();
        using var scope = NewDisposeScope();
        var vision = EncodeImage(pixelValues);                                          // step 1
        var queries = RunQFormer(vision.LastHiddenState);                               // step 2
        var projected = _languageProjection.forward(queries);                           // step 3
        var (embeds, mask) = _bridge.BuildInputs(projected, inputIds, attentionMask);
        var (logits, encoderHidden) = _bridge.Forward(embeds, mask, decoderInputIds);
        var output = new Blip2ForwardOutput(vision.LastHiddenState, vision.PoolerOutput, queries, projected, embeds, mask, logits, encoderHidden);
        foreach (var t in output.ByReferenceName.Values) t.MoveToOuterDisposeScope();
        return output;
    }

    /// <summary>Generates text ids for images and prompts, as transformers v4.45.1
    /// <c>Blip2ForConditionalGeneration.generate</c> does: the language model is driven by the prompt
    /// embeddings, and BOS is prepended to the new tokens of a decoder-only model.</summary>
    /// <param name="pixelValues">(B, 3, H, W) preprocessed images.</param>
    /// <param name="inputIds">(B, T) prompt ids (left-padded); may be (B, 0) for plain captioning in the original layout.</param>
    /// <param name="attentionMask">(B, T), or null for all ones.</param>
    /// <param name="options">decoding options; null for greedy with 20 new tokens.</param>
    /// <param name="cancellationToken">checked before every step.</param>
    public GenerationOutput Generate(Tensor pixelValues, Tensor inputIds, Tensor? attentionMask = null,
        GenerationOptions? options = null, CancellationToken cancellationToken = default) =>
        Generate(pixelValues, inputIds, attentionMask, options ?? new GenerationOptions(), null, null, cancellationToken);

    /// <summary>Generates as <see cref="Generate(Tensor, Tensor, Tensor?, GenerationOptions?, CancellationToken)"/>, with hooks.</summary>
    /// <param name="pixelValues">(B, 3, H, W) preprocessed images.</param>
    /// <param name="inputIds">(B, T) prompt ids (left-padded).</param>
    /// <param name="attentionMask">(B, T), or null for all ones.</param>
    /// <param name="options">decoding options.</param>
    /// <param name="decode">turns a row's new ids into text; needed for <see cref="GenerationOptions.StopStrings"/>.</param>
    /// <param name="onTokens">called after every step with each row's new id (beam search: the current best
    /// beam's) and whether the row was still open before it.</param>
    /// <param name="cancellationToken">checked before every step.</param>
    public GenerationOutput Generate(Tensor pixelValues, Tensor inputIds, Tensor? attentionMask, GenerationOptions options,
        Func<IReadOnlyList<long>, string>? decode, Action<long[], bool[]>? onTokens, CancellationToken cancellationToken) =>
        Generate(pixelValues, inputIds, attentionMask,
            GenerationCall.Resolve(options, GenerationConfig, cancellationToken) with { Decode = decode, OnTokens = onTokens });

    /// <summary>Generation of one resolved call (see <see cref="GenerationCall"/>: its rows may be separate requests).</summary>
    internal GenerationOutput Generate(Tensor pixelValues, Tensor inputIds, Tensor? attentionMask, GenerationCall call)
    {
        using var inference = inference_mode();
        using var scope = NewDisposeScope();
        var (embeds, mask) = LanguageInputs(pixelValues, inputIds, attentionMask);
        long bos = LanguageModels.For(Config.TextConfig).Tokens(Config.TextConfig).Bos ?? 0;   // decoder-only: BOS goes in front of the new tokens
        return _bridge.Generate(embeds, mask, call, bos);
    }

    /// <summary>Quantizes the language model's linear layers (not its head or embeddings) in place; decode steps then read
    /// the integers (see <see cref="WeightQuantization"/>).</summary>
    /// <returns>the layers quantized.</returns>
    public int QuantizeLanguageModel(WeightQuantization kind)
    {
        var (prefixes, except) = QuantizedLayers;
        return QuantizedLinear.QuantizeAll(this, kind, prefixes, except);
    }

    // The layers weight-only quantization covers: the language model's linears, not its head.
    private (string[] Prefixes, string[] Except) QuantizedLayers =>
        (["language_model."], ["language_model." + LanguageModels.For(Config.TextConfig).HeadKey.Replace(".weight", "", StringComparison.Ordinal)]);

    /// <summary>Gives the quantized layers their quantized layout, empty, for a checkpoint saved quantized to load into.</summary>
    internal Blip2ForConditionalGeneration WithQuantizedLayout(WeightQuantization kind)
    {
        var (prefixes, except) = QuantizedLayers;
        QuantizedLinear.PrepareAll(this, kind, prefixes, except);
        return this;
    }


    /// <summary>Logits of a decoder-only BLIP-2 with autograd enabled (no inference mode): for training or
    /// fine-tuning. (B, Q + T, V) in the original layout.</summary>
    public Tensor ForwardLogits(Tensor pixelValues, Tensor inputIds, Tensor? attentionMask = null)
    {
        var (embeds, mask) = LanguageInputs(pixelValues, inputIds, attentionMask);
        return LanguageModel.Forward(embeds, mask, null);
    }

    /// <summary>Steps 1–3 and the language model's input: image → queries → projected → (embeds, mask).</summary>
    private (Tensor Embeds, Tensor Mask) LanguageInputs(Tensor pixelValues, Tensor inputIds, Tensor? attentionMask)
    {
        var vision = EncodeImage(pixelValues);
        return _bridge.BuildInputs(_languageProjection.forward(RunQFormer(vision.LastHiddenState)), inputIds, attentionMask);
    }

    /// <summary>Step 1: the frozen image encoder.</summary>
    internal VisionOutput EncodeImage(Tensor pixelValues)
    {
        Shape.Require(pixelValues, "pixel_values", -1, 3, Config.VisionConfig.ImageSize, Config.VisionConfig.ImageSize);
        return _visionModel.forward(pixelValues.to(DType, Device));
    }

    /// <summary>Step 2: the learned queries attend to the image features. (B, S, Dv) → (B, Q, Dq).</summary>
    internal Tensor RunQFormer(Tensor imageEmbeds)
    {
        using var scope = NewDisposeScope();
        var queryTokens = _queryTokens.expand(imageEmbeds.size(0), -1, -1);
        return _qformer.Forward(queryTokens, imageEmbeds, Config.NumQueryTokens).MoveToOuterDisposeScope();
    }
}
