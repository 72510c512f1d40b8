// Shapes: B batch, N images per sample, n latents per image, L text positions, D text width, Dv vision width.
using Multimodal.Common;
using Multimodal.Generation;
using Multimodal.Language;
using Multimodal.Language.Llama;
using Multimodal.Loading;
using Multimodal.Vision;

namespace Multimodal.Idefics;

/// <summary>transformers v4.44.2 <c>IdeficsDecoupledEmbedding</c>: ids below <c>vocab_size</c> use
/// <c>weight</c>, the added ones (<c>&lt;fake_token_around_image&gt;</c>, <c>&lt;image&gt;</c>) use
/// <c>additional_embedding</c>, so the frozen table stays untouched.</summary>
internal sealed class IdeficsDecoupledEmbedding : nn.Module<Tensor, Tensor>
{
    [ComponentName(Name = "weight")] private readonly Parameter _weight;
    [ComponentName(Name = "additional_embedding")] private readonly EmbeddingTable? _additionalEmbedding;

    public IdeficsDecoupledEmbedding(int vocab, int additional, int dim, Device? device, ScalarType? dtype) : base(nameof(IdeficsDecoupledEmbedding))
    {
        _weight = new Parameter(zeros(vocab, dim, dtype: dtype, device: device), requires_grad: false);
        if (additional > 0) _additionalEmbedding = new EmbeddingTable(additional, dim, device: device, dtype: dtype);
        RegisterComponents();
    }

    public override Tensor forward(Tensor ids)
    {
        using var scope = NewDisposeScope();
        long vocab = _weight.size(0);
        var extra = ids.GreaterOrEqual(vocab);
        var embeds = _weight.index_select(0, ids.AtMost(vocab - 1).flatten()).view(ids.size(0), ids.size(1), -1);
        if (_additionalEmbedding is not null && extra.any().item<bool>())
        {
            var added = _additionalEmbedding.forward(ids.Minus(vocab).AtLeast(0));
            embeds = where(extra.unsqueeze(-1), added, embeds);
        }
        return embeds.MoveToOuterDisposeScope();
    }
}

/// <summary>transformers v4.44.2 <c>IdeficsDecoupledLinear</c>: logits = cat(x·Wᵀ, additional_fc(x)).</summary>
internal sealed class IdeficsDecoupledLinear : nn.Module<Tensor, Tensor>
{
    [ComponentName(Name = "weight")] private readonly Parameter _weight;
    [ComponentName(Name = "additional_fc")] private readonly Linear? _additionalFc;

    public IdeficsDecoupledLinear(int dim, int vocab, int additional, Device? device, ScalarType? dtype) : base(nameof(IdeficsDecoupledLinear))
    {
        _weight = new Parameter(zeros(vocab, dim, dtype: dtype, device: device), requires_grad: false);
        if (additional > 0) _additionalFc = Uninitialized.Linear(dim, additional, hasBias: false, device: device, dtype: dtype);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var logits = LinearExtensions.Product(x, _weight, null);
        if (_additionalFc is not null) logits = cat([logits, _additionalFc.Apply(x)], -1);
        return logits.MoveToOuterDisposeScope();
    }
}

/// <summary>transformers v4.44.2 <c>IdeficsGatedCrossAttentionLayer</c>: h += tanh(alpha_cross_attn) ·
/// gate · xattn(RMSNorm(h), images); h += tanh(alpha_dense) · mlp(RMSNorm(h)). The gate zeroes the
/// attention output of tokens that see no image; the dense half still runs for them, as upstream.</summary>
internal sealed class IdeficsGatedCrossAttentionLayer : nn.Module
{
    [ComponentName(Name = "alpha_cross_attn")] private readonly Parameter _alphaCrossAttn;
    [ComponentName(Name = "alpha_dense")] private readonly Parameter _alphaDense;
    [ComponentName(Name = "cross_attn")] private readonly LlamaAttention _crossAttn;
    [ComponentName(Name = "mlp")] private readonly LlamaMlp _mlp;
    [ComponentName(Name = "input_layernorm")] private readonly LlamaRmsNorm _inputLayernorm;
    [ComponentName(Name = "post_attention_layernorm")] private readonly LlamaRmsNorm _postAttentionLayernorm;

    public IdeficsGatedCrossAttentionLayer(IdeficsConfig config, Device? device, ScalarType? dtype) : base(nameof(IdeficsGatedCrossAttentionLayer))
    {
        long[] gateShape = config.AlphaType == "vector" ? [1, 1, config.HiddenSize] : [1];
        _alphaCrossAttn = new Parameter(zeros(gateShape, dtype: dtype, device: device), requires_grad: false);
        _alphaDense = new Parameter(zeros(gateShape, dtype: dtype, device: device), requires_grad: false);
        _crossAttn = new LlamaAttention(config.HiddenSize, config.NumAttentionHeads, config.VisionConfig.EmbedDim, config.QkLayerNorms,
            config.RmsNormEps, layerIndex: -1, device, dtype);
        _mlp = new LlamaMlp(config.HiddenSize, config.IntermediateSize, config.HiddenAct, device, dtype);
        _inputLayernorm = new LlamaRmsNorm(config.HiddenSize, config.RmsNormEps, device, dtype);
        _postAttentionLayernorm = new LlamaRmsNorm(config.HiddenSize, config.RmsNormEps, device, dtype);
        RegisterComponents();
    }

    public LlamaAttention CrossAttention => _crossAttn;

    /// <param name="hidden">(B, L, D).</param>
    /// <param name="keys">media keys (B, h, N·n, d).</param>
    /// <param name="values">media values.</param>
    /// <param name="mask">additive (B, 1, L, N·n).</param>
    /// <param name="gate">(B, L, 1): 1 where the token sees at least one image.</param>
    public Tensor Forward(Tensor hidden, Tensor keys, Tensor values, Tensor mask, Tensor gate)
    {
        using var scope = NewDisposeScope();
        var attended = _crossAttn.CrossAttention(_inputLayernorm.forward(hidden), keys, values, mask).mul(gate);
        hidden = hidden.Plus(_alphaCrossAttn.tanh().mul(attended));
        hidden = hidden.Plus(_alphaDense.tanh().mul(_mlp.forward(_postAttentionLayernorm.forward(hidden))));
        return hidden.MoveToOuterDisposeScope();
    }
}

/// <summary>transformers v4.44.2 <c>IdeficsModel</c>: decoupled embeddings, CLIP vision tower, perceiver,
/// LLaMA layers with a gated cross-attention block before layer i when i % cross_layer_interval == 0,
/// final RMSNorm.</summary>
internal sealed class IdeficsModel : nn.Module
{
    [ComponentName(Name = "embed_tokens")] private readonly IdeficsDecoupledEmbedding _embedTokens;
    [ComponentName(Name = "vision_model")] private readonly ClipVisionTransformer _visionModel;
    [ComponentName(Name = "perceiver_resampler")] private readonly IdeficsPerceiverResampler _perceiverResampler;
    [ComponentName(Name = "layers")] private readonly ModuleList<LlamaDecoderLayer> _layers = new();
    [ComponentName(Name = "gated_cross_attn_layers")] private readonly ModuleList<IdeficsGatedCrossAttentionLayer> _gatedCrossAttnLayers = new();
    [ComponentName(Name = "norm")] private readonly LlamaRmsNorm _norm;
    private readonly IdeficsConfig _config;

    public IdeficsModel(IdeficsConfig config, Device? device, ScalarType? dtype) : base(nameof(IdeficsModel))
    {
        _config = config;
        _embedTokens = new IdeficsDecoupledEmbedding(config.VocabSize, config.AdditionalVocabSize, config.HiddenSize, device, dtype);
        _visionModel = new ClipVisionTransformer(config.VisionConfig.ToClip(), "pixel_values image", device, dtype);
        _perceiverResampler = new IdeficsPerceiverResampler(config, device, dtype);
        for (int i = 0; i < config.NumHiddenLayers; i++)
            _layers.Add(new LlamaDecoderLayer(config.HiddenSize, config.NumAttentionHeads, config.IntermediateSize, config.HiddenAct, config.RmsNormEps, i, device, dtype));
        for (int i = 0; i < config.NumHiddenLayers / config.CrossLayerInterval; i++)
            _gatedCrossAttnLayers.Add(new IdeficsGatedCrossAttentionLayer(config, device, dtype));
        _norm = new LlamaRmsNorm(config.HiddenSize, config.RmsNormEps, device, dtype);
        RegisterComponents();
    }

    public int LayerCount => _layers.Count;

    public IReadOnlyList<IdeficsGatedCrossAttentionLayer> GatedLayers => _gatedCrossAttnLayers.ToList();

    public Tensor Embed(Tensor ids) => _embedTokens.forward(ids);

    /// <summary>(B·N, 3, H, W) → vision last hidden state (B·N, S, Dv) and perceiver latents (B·N, n, Dv).</summary>
    public (Tensor Vision, Tensor Latents) EncodeImages(Tensor pixels)
    {
        using var scope = NewDisposeScope();
        var vision = _visionModel.forward(pixels);
        var latents = _perceiverResampler.forward(vision);
        return (vision.MoveToOuterDisposeScope(), latents.MoveToOuterDisposeScope());
    }

    /// <param name="embeds">(B, Lnew, D).</param>
    /// <param name="attentionMask">(B, Lpast + Lnew).</param>
    /// <param name="cache">self-attention cache.</param>
    /// <param name="media">per-request media state.</param>
    /// <param name="crossMask">additive (B, 1, Lnew, N·n).</param>
    /// <param name="gate">(B, Lnew, 1).</param>
    public Tensor Forward(Tensor embeds, Tensor attentionMask, KvCache? cache, IReadOnlyList<(Tensor Keys, Tensor Values)> media, Tensor crossMask, Tensor gate)
    {
        using var scope = NewDisposeScope();
        long past = cache?.SequenceLength ?? 0, fresh = embeds.size(1);
        var mask = Attention.CausalPaddingMask(attentionMask, fresh, embeds.dtype);
        // position_ids = cumsum(mask) − 1 with padding at 1, as IdeficsModel and its generation inputs compute them.
        var positions = Rotary.MaskPositions(attentionMask, past, fresh);
        int headDim = _config.HiddenSize / _config.NumAttentionHeads;
        var (cos, sin) = Rotary.TablesAt(positions, headDim, 10000, embeds.dtype);
        var hidden = embeds;
        for (int i = 0; i < _layers.Count; i++)
        {
            if (i % _config.CrossLayerInterval == 0)
            {
                int g = i / _config.CrossLayerInterval;
                hidden = _gatedCrossAttnLayers[g].Forward(hidden, media[g].Keys, media[g].Values, crossMask, gate);
            }
            hidden = _layers[i].Forward(hidden, mask, cos, sin, cache);
        }
        return _norm.forward(hidden).MoveToOuterDisposeScope();
    }
}

/// <summary>What <see cref="IdeficsForVisionText2Text.Forward"/> computes. Disposing disposes the tensors.</summary>
/// <param name="VisionLastHiddenState">(B·N, S, Dv), no post-layernorm.</param>
/// <param name="PerceiverOutput">(B·N, n, Dv).</param>
/// <param name="ImageHiddenStates">(B, N, n, Dv).</param>
/// <param name="Logits">(B, L, V + additional).</param>
public sealed record IdeficsForwardOutput(Tensor VisionLastHiddenState, Tensor PerceiverOutput, Tensor ImageHiddenStates, Tensor Logits) : IDisposable
{
    /// <summary>Tensors by the names the upstream reference files use.</summary>
    internal IReadOnlyDictionary<string, Tensor> ByReferenceName => new Dictionary<string, Tensor>
    {
        ["vision_last_hidden_state"] = VisionLastHiddenState,
        ["perceiver_output"] = PerceiverOutput,
        ["image_hidden_states"] = ImageHiddenStates,
        ["logits"] = Logits,
    };

    /// <inheritdoc/>
    public void Dispose()
    {
        foreach (var t in ByReferenceName.Values) t.Dispose();
    }
}

/// <summary>transformers v4.44.2 <c>IdeficsForVisionText2Text</c> (modeling_idefics.py; Laurençon et al.
/// 2023, an open reproduction of Flamingo): <see cref="IdeficsModel"/> and a decoupled head whose logits
/// cover the text vocabulary and the added tokens.</summary>
public sealed class IdeficsForVisionText2Text : nn.Module
{
    [ComponentName(Name = "model")] private readonly IdeficsModel _model;
    [ComponentName(Name = "lm_head")] private readonly IdeficsDecoupledLinear _lmHead;

    /// <summary>The config the model was built from: normalized, validated, upstream's default for every key the file omits.</summary>
    public IdeficsConfig Config { get; }

    /// <summary>The device the parameters were built on (CPU or CUDA); inputs are moved to it.</summary>
    public Device Device { get; }

    /// <summary>The parameters' dtype (float32, float16 or bfloat16); inputs are cast to it.</summary>
    public ScalarType DType { get; }

    /// <summary>Builds the model (weights to be loaded).</summary>
    public IdeficsForVisionText2Text(IdeficsConfig config, Device? device = null, ScalarType? dtype = null) : base(nameof(IdeficsForVisionText2Text))
    {
        if (config.TieWordEmbeddings) throw new NotSupportedException("IDEFICS with tie_word_embeddings = true is not supported (no published checkpoint ties them).");
        Config = config;
        Device = DeviceCheck.Resolve(device);
        DType = DeviceCheck.Resolve(dtype);
        _model = new IdeficsModel(config, Device, DType);
        _lmHead = new IdeficsDecoupledLinear(config.HiddenSize, config.VocabSize, config.AdditionalVocabSize, Device, DType);
        RegisterComponents();
        eval();
        foreach (var p in parameters()) p.requires_grad = false;
    }

    /// <summary>The checkpoint's <c>generation_config.json</c> defaults, applied to every option a caller
    /// leaves unset (null when the folder has none).</summary>
    public GenerationConfig? GenerationConfig { get; init; }

    /// <summary>Loads a transformers IDEFICS folder (config.json, single or sharded safetensors; bf16 weights load
    /// into any dtype), or a hub id from the local Hugging Face cache at <paramref name="revision"/>.</summary>
    /// <remarks><c>quantization</c>: weight-only quantization of the language model, applied tensor by tensor as the float
    /// checkpoint loads (see <see cref="WeightQuantization"/>); a folder saved quantized loads as saved.</remarks>
    public static IdeficsForVisionText2Text FromPretrained(string folder, Device? device = null, ScalarType? dtype = null,
        IProgress<LoadProgress>? progress = null, string? revision = null, WeightQuantization quantization = WeightQuantization.None)
    {
        using var checkpoint = CheckpointFolder.Open(HubCache.Resolve(folder, revision));
        var config = IdeficsConfig.Load(checkpoint.ConfigPath);
        config.RequireArchitecture(checkpoint.ConfigPath, nameof(IdeficsForVisionText2Text), "IdeficsForVisionText2Text", "IdeficsModel");
        var defaults = GenerationConfig.FromFolder(checkpoint.Folder);
        var quantized = config.QuantizationConfig?.Kind(checkpoint.ConfigPath) ?? quantization;
        return StateDictLoader.BuildAndLoad(d => new IdeficsForVisionText2Text(config, d, dtype) { GenerationConfig = defaults }.WithQuantizedLayout(quantized),
            device, checkpoint, IdeficsKeyMap.Map, nameof(IdeficsForVisionText2Text), progress);
    }

    internal IdeficsModel Inner => _model;

    internal Tensor Head(Tensor hidden) => _lmHead.forward(hidden);

    /// <summary>Runs the model once.</summary>
    /// <param name="inputIds">(B, L), left-padded, with the IdeficsProcessor image tokens.</param>
    /// <param name="attentionMask">(B, L).</param>
    /// <param name="pixelValues">(B, N, 3, H, W).</param>
    /// <param name="imageAttentionMask">(B, L, N) one-hot: which image each token attends.</param>
    public IdeficsForwardOutput Forward(Tensor inputIds, Tensor attentionMask, Tensor pixelValues, Tensor imageAttentionMask)
    {
        using var inference = inference_mode();
        using var scope = NewDisposeScope();
        var (vision, latents, images) = EncodeImages(pixelValues);
        var ids = inputIds.to(ScalarType.Int64, Device);
        var mask = attentionMask.to(ScalarType.Int64, Device);
        using var session = new IdeficsSession(this, images, imageAttentionMask.to(ScalarType.Int64, Device));
        var logits = session.Forward(_model.Embed(ids), mask, null, ids);
        var output = new IdeficsForwardOutput(vision, latents, images, logits);
        foreach (var t in output.ByReferenceName.Values) t.MoveToOuterDisposeScope();
        return output;
    }

    /// <summary>Quantizes the language model's linear layers and the gated cross-attention layers' (not the vision tower, the perceiver, the decoupled head or embeddings) in place; decode steps then read
    /// the integers (see <see cref="WeightQuantization"/>).</summary>
    /// <returns>the layers quantized.</returns>
    public int QuantizeLanguageModel(WeightQuantization kind)
    {
        var (prefixes, except) = QuantizedLayers;
        return QuantizedLinear.QuantizeAll(this, kind, prefixes, except);
    }

    // The layers weight-only quantization covers: the decoder's and the gated cross-attention layers' linears.
    private static (string[] Prefixes, string[] Except) QuantizedLayers => (["model.layers.", "model.gated_cross_attn_layers."], []);

    /// <summary>Gives the quantized layers their quantized layout, empty, for a checkpoint saved quantized to load into.</summary>
    internal IdeficsForVisionText2Text WithQuantizedLayout(WeightQuantization kind)
    {
        var (prefixes, except) = QuantizedLayers;
        QuantizedLinear.PrepareAll(this, kind, prefixes, except);
        return this;
    }


    /// <summary>Generates continuations, as upstream's <c>generate</c>: images encoded once, every new token
    /// attends the image the last prompt token attends, output = prompt + new tokens.</summary>
    public GenerationOutput Generate(Tensor inputIds, Tensor attentionMask, Tensor pixelValues, Tensor imageAttentionMask,
        GenerationOptions? options = null, Func<IReadOnlyList<long>, string>? decode = null, Action<long[], bool[]>? onTokens = null,
        CancellationToken cancellationToken = default) =>
        Generate(inputIds, attentionMask, pixelValues, imageAttentionMask,
            GenerationCall.Resolve(options, GenerationConfig, cancellationToken) with { Decode = decode, OnTokens = onTokens });

    /// <summary>Generation of one resolved call (see <see cref="GenerationCall"/>).</summary>
    internal GenerationOutput Generate(Tensor inputIds, Tensor attentionMask, Tensor pixelValues, Tensor imageAttentionMask, GenerationCall call)
    {
        var options = call.Options;
        using var inference = inference_mode();
        using var scope = NewDisposeScope();
        var (_, _, images) = EncodeImages(pixelValues);
        var ids = inputIds.to(ScalarType.Int64, Device);
        var mask = attentionMask.to(ScalarType.Int64, Device);
        int prompt = (int)ids.size(1);
        var (maxNew, minNew) = options.ResolveLimits(prompt, prompt);
        var eos = (options.EosTokenIds ?? [Config.EosTokenId]).ToArray();
        long pad = options.PadTokenId ?? Config.PadTokenId;
        using var session = new IdeficsSession(this, images, imageAttentionMask.to(ScalarType.Int64, Device));
        var promptRows = ids.cpu();
        var request = new GenerationRequest
        {
            Model = session, PromptEmbeds = _model.Embed(ids), PromptMask = mask, PromptIds = ids,
            Call = call.Prefixing(row => promptRows[row].data<long>().ToArray()),
            MaxNewTokens = maxNew, MinNewTokens = minNew, Eos = eos, Pad = pad,
        };
        var output = Generation.Generator.Generate(request);
        return output with { Sequences = output.Sequences.Select((row, i) => promptRows[i].data<long>().ToArray().Concat(row).ToArray()).ToArray() };
    }

    private (Tensor Vision, Tensor Latents, Tensor Images) EncodeImages(Tensor pixelValues)
    {
        if (pixelValues.dim() != 5) throw new ArgumentException($"pixel_values must be (B, N, 3, H, W); got {Shape.Format(pixelValues.shape)}.", nameof(pixelValues));
        long b = pixelValues.size(0), n = pixelValues.size(1);
        var (vision, latents) = _model.EncodeImages(pixelValues.to(DType, Device).flatten(0, 1));
        return (vision, latents, latents.view(b, n, latents.size(1), latents.size(2)));
    }
}

/// <summary>One IDEFICS request as a language model: the image latents, their keys/values for every gated
/// block (computed once), and the prompt's image attention rows. A position past the prompt attends the
/// image of the LAST prompt row, as upstream's generation does (<c>image_attention_mask[:, -1:]</c>).</summary>
internal sealed class IdeficsSession(IdeficsForVisionText2Text model, Tensor images, Tensor imageAttentionMask) : ICausalLanguageModel, IDisposable
{
    private (Tensor Keys, Tensor Values)[]? _media;
    private Tensor _images = images;
    private Tensor _rows = imageAttentionMask;                   // (B, L, N)
    private bool _owns;

    public Tensor EmbedTokens(Tensor inputIds) => model.Inner.Embed(inputIds);

    public KvCache NewCache() => new(model.Inner.LayerCount);

    /// <inheritdoc/>
    public bool SelectRows(Tensor rows) => false;   // the images stay whole

    public Tensor Forward(Tensor inputsEmbeds, Tensor attentionMask, KvCache? cache, Tensor? inputIds = null)
    {
        Prepare(inputsEmbeds.size(0));
        using var scope = NewDisposeScope();
        long past = cache?.SequenceLength ?? 0, fresh = inputsEmbeds.size(1), promptLength = _rows.size(1);
        // Image attention row of every new position: the prompt's own row, then the last prompt row.
        var index = Scalars.Arange(past, past + fresh, ScalarType.Int64, _rows.device).AtMost(promptLength - 1);
        var rows = _rows.index_select(1, index);                                    // (B, Lnew, N)
        long latents = _images.size(2);
        var perLatent = rows.repeat_interleave(latents, 2);                          // (B, Lnew, N·n)
        var crossMask = zeros(perLatent.shape, inputsEmbeds.dtype, perLatent.device)
            .FillWhere(perLatent.EqualTo(0), Attention.MinValue(inputsEmbeds.dtype)).unsqueeze(1);   // (B, 1, Lnew, N·n)
        var gate = rows.GreaterThan(0).any(-1, keepdim: true).to(inputsEmbeds.dtype);                     // (B, Lnew, 1)
        var hidden = model.Inner.Forward(inputsEmbeds, attentionMask, cache, _media!, crossMask, gate);
        return model.Head(hidden).MoveToOuterDisposeScope();
    }

    private void Prepare(long rows)
    {
        if (_media is not null && _images.size(0) == rows) return;
        if (_images.size(0) != rows)
        {
            long factor = rows / _images.size(0);
            _images = _images.repeat_interleave(factor, 0).DetachFromDisposeScope();
            _rows = _rows.repeat_interleave(factor, 0).DetachFromDisposeScope();
            _owns = true;
        }
        DisposeMedia();
        using var flat = _images.flatten(1, 2);                                      // (B, N·n, Dv)
        _media = model.Inner.GatedLayers.Select(g =>
        {
            var (k, v) = g.CrossAttention.MediaKeysValues(flat);
            return (k.DetachFromDisposeScope(), v.DetachFromDisposeScope());
        }).ToArray();
    }

    private void DisposeMedia()
    {
        foreach (var (k, v) in _media ?? []) { k.Dispose(); v.Dispose(); }
        _media = null;
    }

    public void Dispose()
    {
        DisposeMedia();
        if (_owns) { _images.Dispose(); _rows.Dispose(); }
    }
}
