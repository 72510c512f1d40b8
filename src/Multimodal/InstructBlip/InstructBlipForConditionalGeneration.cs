// Shapes: B batch, Q query tokens, Tq instruction tokens, T prompt tokens, D Q-Former width, E LM width, V vocabulary.
using Multimodal.Blip2;
using Multimodal.Common;
using Multimodal.Generation;
using Multimodal.Loading;
using Multimodal.Vision;

namespace Multimodal.InstructBlip;

/// <summary>What <see cref="InstructBlipForConditionalGeneration.Forward"/> computes. Disposing disposes the tensors.</summary>
/// <param name="VisionLastHiddenState">(B, 1 + patches, Dv), after post_layernorm.</param>
/// <param name="VisionPoolerOutput">(B, Dv).</param>
/// <param name="QformerEmbeddingsOutput">(B, Q + Tq, D): LayerNorm of [queries; instruction].</param>
/// <param name="QformerLastHiddenState">(B, Q + Tq, D): query and instruction rows.</param>
/// <param name="QformerQueryOutput">(B, Q, D): the query rows, which reach the language model.</param>
/// <param name="LanguageProjectionOutput">(B, Q, E).</param>
/// <param name="LmInputsEmbeds">(B, L, E) the language model's input.</param>
/// <param name="LmAttentionMask">(B, L).</param>
/// <param name="Logits">(B, L or Td, V): upstream <c>forward()</c> (LLaMA positions 0 … L−1).</param>
/// <param name="LogitsGeneratePositionIds">(B, L, V) with generation's positions (decoder-only), else null.</param>
/// <param name="EncoderLastHiddenState">T5's encoder output, else null.</param>
public sealed record InstructBlipForwardOutput(Tensor VisionLastHiddenState, Tensor VisionPoolerOutput, Tensor QformerEmbeddingsOutput,
    Tensor QformerLastHiddenState, Tensor QformerQueryOutput, Tensor LanguageProjectionOutput, Tensor LmInputsEmbeds, Tensor LmAttentionMask,
    Tensor Logits, Tensor? LogitsGeneratePositionIds, Tensor? EncoderLastHiddenState) : IDisposable
{
    /// <summary>Tensors by the names the upstream reference files use.</summary>
    internal IReadOnlyDictionary<string, Tensor> ByReferenceName
    {
        get
        {
            var all = new Dictionary<string, Tensor>
            {
                ["vision_last_hidden_state"] = VisionLastHiddenState, ["vision_pooler_output"] = VisionPoolerOutput,
                ["qformer_embeddings_output"] = QformerEmbeddingsOutput, ["qformer_last_hidden_state"] = QformerLastHiddenState,
                ["qformer_query_output"] = QformerQueryOutput, ["language_projection_output"] = LanguageProjectionOutput,
                ["lm_inputs_embeds"] = LmInputsEmbeds, ["lm_attention_mask"] = LmAttentionMask, ["logits"] = Logits,
            };
            if (LogitsGeneratePositionIds is not null) all["logits_generate_position_ids"] = LogitsGeneratePositionIds;
            if (EncoderLastHiddenState is not null) all["encoder_last_hidden_state"] = EncoderLastHiddenState;
            return all;
        }
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        foreach (var t in ByReferenceName.Values) t.Dispose();
    }
}

/// <summary>InstructBLIP (Dai et al. 2023, "InstructBLIP: Towards General-purpose Vision-Language Models with
/// Instruction Tuning"), mirroring transformers v4.45 <c>InstructBlipForConditionalGeneration</c>
/// (modeling_instructblip.py): BLIP-2's frozen ViT and language-model half, with a Q-Former that reads the instruction
/// beside its queries. Language models: LLaMA (Vicuna) and T5 (Flan-T5).</summary>
public sealed class InstructBlipForConditionalGeneration : nn.Module
{
    [ComponentName(Name = "vision_model")] private readonly Blip2VisionModel _visionModel;
    [ComponentName(Name = "query_tokens")] private readonly Parameter _queryTokens;
    [ComponentName(Name = "qformer")] private readonly InstructBlipQFormerModel _qformer;
    [ComponentName(Name = "language_projection")] private readonly Linear _languageProjection;
    [ComponentName(Name = "language_model")] private readonly nn.Module _languageModel;
    private readonly QueryPrefixedLanguageModel _bridge;

    /// <summary>The config the model was built from: normalized, validated, upstream's default for every key the file omits.</summary>
    public InstructBlipConfig Config { get; }

    /// <summary>The device the parameters were built on (CPU or CUDA); inputs are moved to it.</summary>
    public Device Device { get; }

    /// <summary>The parameters' dtype (float32, float16 or bfloat16); inputs are cast to it.</summary>
    public ScalarType DType { get; }

    /// <summary>The checkpoint's <c>generation_config.json</c> defaults (null when none).</summary>
    public GenerationConfig? GenerationConfig { get; init; }

    /// <summary>Builds the model (weights to be loaded) on <paramref name="device"/> in <paramref name="dtype"/>.</summary>
    /// <exception cref="NotSupportedException">the text model type, device or dtype is not supported.</exception>
    public InstructBlipForConditionalGeneration(InstructBlipConfig config, Device? device = null, ScalarType? dtype = null)
        : base(nameof(InstructBlipForConditionalGeneration))
    {
        Config = config;
        Device = DeviceCheck.Resolve(device);
        DType = DeviceCheck.Resolve(dtype);
        // InstructBLIP's Q-Former always has the text path (InstructBlipQFormerLayer builds the text FFN unconditionally).
        var q = config.QformerConfig with { EncoderHiddenSize = config.VisionConfig.HiddenSize, UseQformerTextInput = true };
        _visionModel = new Blip2VisionModel(config.VisionConfig, Device, DType);
        _queryTokens = new Parameter(empty(1, config.NumQueryTokens, q.HiddenSize, dtype: DType, device: Device), requires_grad: false);
        _qformer = new InstructBlipQFormerModel(q, Device, DType);
        _languageModel = QueryPrefixedLanguageModel.Build(config.TextConfig, "InstructBLIP", Device, DType, "llama", "t5");
        _languageProjection = Uninitialized.Linear(q.HiddenSize, QueryPrefixedLanguageModel.Width(config.TextConfig), device: Device, dtype: DType);
        _bridge = new QueryPrefixedLanguageModel(_languageModel, config.TextConfig, config.NumQueryTokens, config.ImageTokenIndex, Device);
        RegisterComponents();
        eval();
        foreach (var p in parameters()) p.requires_grad = false;
    }

    /// <summary>Loads a published InstructBLIP folder (config.json + single or sharded safetensors).</summary>
    /// <exception cref="ConfigException">config.json is malformed or not InstructBLIP (a BLIP-2 folder is named as such).</exception>
    /// <remarks><c>quantization</c>: weight-only quantization of the language model, applied tensor by tensor as the float
    /// checkpoint loads (see <see cref="WeightQuantization"/>); a folder saved quantized loads as saved.</remarks>
    /// <exception cref="CheckpointException">the weights are malformed or do not match.</exception>
    public static InstructBlipForConditionalGeneration FromPretrained(string folder, Device? device = null, ScalarType? dtype = null,
        IProgress<LoadProgress>? progress = null, string? revision = null, WeightQuantization quantization = WeightQuantization.None)
    {
        using var checkpoint = CheckpointFolder.Open(HubCache.Resolve(folder, revision));
        var config = InstructBlipConfig.Load(checkpoint.ConfigPath);
        config.RequireArchitecture(checkpoint.ConfigPath, nameof(InstructBlipForConditionalGeneration), "InstructBlipForConditionalGeneration");
        var defaults = GenerationConfig.FromFolder(checkpoint.Folder);
        var quantized = config.QuantizationConfig?.Kind(checkpoint.ConfigPath) ?? quantization;
        return StateDictLoader.BuildAndLoad(d => new InstructBlipForConditionalGeneration(config, d, dtype) { GenerationConfig = defaults }.WithQuantizedLayout(quantized),
            device, checkpoint, Blip2KeyMap.ForLanguageModel(config.TextConfig), nameof(InstructBlipForConditionalGeneration), progress);
    }

    /// <summary>Runs the whole model once (no generation) and returns every step's output.</summary>
    /// <param name="pixelValues">(B, 3, H, W).</param>
    /// <param name="qformerInputIds">(B, Tq) the instruction in the Q-Former's (BERT) vocabulary.</param>
    /// <param name="qformerAttentionMask">(B, Tq), or null for all ones.</param>
    /// <param name="inputIds">(B, T) the prompt in the language model's vocabulary.</param>
    /// <param name="attentionMask">(B, T), or null for all ones.</param>
    /// <param name="decoderInputIds">T5 only: teacher-forced decoder ids (default: the start token).</param>
    public InstructBlipForwardOutput Forward(Tensor pixelValues, Tensor qformerInputIds, Tensor? qformerAttentionMask, Tensor inputIds,
        Tensor? attentionMask = null, Tensor? decoderInputIds = null)
    {
        using var inference = inference_mode();
        using var scope = NewDisposeScope();
        var vision = EncodeImage(pixelValues);
        var (qEmbeddings, qHidden) = RunQFormer(vision.LastHiddenState, qformerInputIds, qformerAttentionMask);
        var queries = qHidden.narrow(1, 0, Config.NumQueryTokens);
        var projected = _languageProjection.forward(queries);
        var (embeds, mask) = _bridge.BuildInputs(projected, inputIds, attentionMask);
        var (logits, encoderHidden) = _bridge.Forward(embeds, mask, decoderInputIds);
        var generatePositions = _bridge.EncoderDecoder is null ? _bridge.LanguageModel.Forward(embeds, mask, null) : null;
        var output = new InstructBlipForwardOutput(vision.LastHiddenState, vision.PoolerOutput, qEmbeddings, qHidden, queries, projected,
            embeds, mask, logits, generatePositions, encoderHidden);
        foreach (var t in output.ByReferenceName.Values) t.MoveToOuterDisposeScope();
        return output;
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
        (["language_model."], ["language_model." + Language.LanguageModels.For(Config.TextConfig).HeadKey.Replace(".weight", "", StringComparison.Ordinal)]);

    /// <summary>Gives the quantized layers their quantized layout, empty, for a checkpoint saved quantized to load into.</summary>
    internal InstructBlipForConditionalGeneration WithQuantizedLayout(WeightQuantization kind)
    {
        var (prefixes, except) = QuantizedLayers;
        QuantizedLinear.PrepareAll(this, kind, prefixes, except);
        return this;
    }


    /// <summary>Generates as transformers' <c>InstructBlipForConditionalGeneration.generate</c>: the language model is
    /// driven by the prompt embeddings; a decoder-only model's new tokens get <see cref="InstructBlipConfig.PrependedTokenId"/>
    /// in front (T5's start with <c>decoder_start_token_id</c>).</summary>
    /// <exception cref="InvalidOperationException">a decoder-only text config without <c>architectures</c> (upstream raises too).</exception>
    public GenerationOutput Generate(Tensor pixelValues, Tensor qformerInputIds, Tensor? qformerAttentionMask, Tensor inputIds, Tensor? attentionMask,
        GenerationOptions options, Func<IReadOnlyList<long>, string>? decode = null, Action<long[], bool[]>? onTokens = null,
        CancellationToken cancellationToken = default) =>
        Generate(pixelValues, qformerInputIds, qformerAttentionMask, inputIds, attentionMask,
            GenerationCall.Resolve(options, GenerationConfig, cancellationToken) with { Decode = decode, OnTokens = onTokens });

    /// <summary>Generation of one resolved call (see <see cref="GenerationCall"/>: its rows may be separate requests).</summary>
    internal GenerationOutput Generate(Tensor pixelValues, Tensor qformerInputIds, Tensor? qformerAttentionMask, Tensor inputIds, Tensor? attentionMask,
        GenerationCall call)
    {
        long prepended = _bridge.EncoderDecoder is not null ? 0 : Config.PrependedTokenId
            ?? throw new InvalidOperationException("text_config.architectures is missing: InstructBLIP's generate() takes the id it prepends from it.");
        using var inference = inference_mode();
        using var scope = NewDisposeScope();
        var vision = EncodeImage(pixelValues);
        var (_, qHidden) = RunQFormer(vision.LastHiddenState, qformerInputIds, qformerAttentionMask);
        var projected = _languageProjection.forward(qHidden.narrow(1, 0, Config.NumQueryTokens));
        var (embeds, mask) = _bridge.BuildInputs(projected, inputIds, attentionMask);
        return _bridge.Generate(embeds, mask, call, prepended);
    }

    private VisionOutput EncodeImage(Tensor pixelValues)
    {
        Shape.Require(pixelValues, "pixel_values", -1, 3, Config.VisionConfig.ImageSize, Config.VisionConfig.ImageSize);
        return _visionModel.forward(pixelValues.to(DType, Device));
    }

    private (Tensor Embeddings, Tensor Hidden) RunQFormer(Tensor image, Tensor qformerInputIds, Tensor? qformerAttentionMask)
    {
        long b = image.size(0);
        Shape.Require(qformerInputIds, "qformer_input_ids", b, -1);
        if (qformerInputIds.numel() > 0 && (qformerInputIds.min().item<long>() < 0 || qformerInputIds.max().item<long>() >= Config.QformerConfig.VocabSize))
            throw new ArgumentException($"qformer_input_ids must lie in [0, {Config.QformerConfig.VocabSize}).", nameof(qformerInputIds));
        var ids = qformerInputIds.to(ScalarType.Int64, Device);
        var mask = qformerAttentionMask?.to(ScalarType.Int64, Device) ?? ones_like(ids);
        Shape.Require(mask, "qformer_attention_mask", b, ids.size(1));
        return _qformer.Forward(_queryTokens.expand(b, -1, -1), ids, mask, image);
    }
}
