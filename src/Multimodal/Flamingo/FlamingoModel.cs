// Shapes: B batch, T images per sample, F frames (1), C·H·W an image, v patch tokens, n latents, L text positions.
using Multimodal.Common;
using Multimodal.Generation;
using Multimodal.Language;
using Multimodal.Loading;
using Multimodal.Vision;

namespace Multimodal.Flamingo;

/// <summary>What <see cref="FlamingoModel.Forward"/> computes. Disposing disposes the tensors.</summary>
/// <param name="VisionEncoderTokens">(B·T·F, v, Dv) patch tokens fed to the perceiver.</param>
/// <param name="VisionEncoderPooled">(B·T·F, E) pooled CLIP embeddings (unused by Flamingo).</param>
/// <param name="PerceiverOutput">(B, T, n, Dv).</param>
/// <param name="Logits">(B, L, V).</param>
public sealed record FlamingoForwardOutput(Tensor VisionEncoderTokens, Tensor VisionEncoderPooled, Tensor PerceiverOutput, Tensor Logits) : IDisposable
{
    /// <summary>Tensors by the names the upstream reference files use.</summary>
    internal IReadOnlyDictionary<string, Tensor> ByReferenceName => new Dictionary<string, Tensor>
    {
        ["vision_encoder_tokens"] = VisionEncoderTokens,
        ["vision_encoder_pooled"] = VisionEncoderPooled,
        ["perceiver_output"] = PerceiverOutput,
        ["logits"] = Logits,
    };

    /// <inheritdoc/>
    public void Dispose()
    {
        foreach (var t in ByReferenceName.Values) t.Dispose();
    }
}

/// <summary>open_flamingo 2.0.1 <c>Flamingo</c> (flamingo.py; Alayrac et al. 2022, "Flamingo: a Visual
/// Language Model for Few-Shot Learning"; Awadalla et al. 2023, OpenFlamingo): a frozen open_clip ViT,
/// a perceiver resampler, and a frozen language model whose decoder layers are wrapped with gated
/// cross-attention blocks every <c>cross_attn_every_n_layers</c> layers.</summary>
public sealed class FlamingoModel : nn.Module
{
    [ComponentName(Name = "vision_encoder")] private readonly ClipVisionTransformer _visionEncoder;
    [ComponentName(Name = "perceiver")] private readonly PerceiverResampler _perceiver;
    [ComponentName(Name = "lang_encoder")] private readonly nn.Module _langEncoder;

    /// <summary>The config the model was built from: normalized, validated, upstream's default for every key the file omits.</summary>
    public FlamingoConfig Config { get; }

    /// <summary>The device the parameters were built on (CPU or CUDA); inputs are moved to it.</summary>
    public Device Device { get; }

    /// <summary>The parameters' dtype (float32, float16 or bfloat16); inputs are cast to it.</summary>
    public ScalarType DType { get; }

    internal IFlamingoHost Host => (IFlamingoHost)_langEncoder;

    internal FlamingoLayer[] Layers { get; }

    /// <summary>Builds the model on <paramref name="device"/> in <paramref name="dtype"/> (weights to be loaded).</summary>
    public FlamingoModel(FlamingoConfig config, Device? device = null, ScalarType? dtype = null) : base(nameof(FlamingoModel))
    {
        Config = config;
        Device = DeviceCheck.Resolve(device);
        DType = DeviceCheck.Resolve(dtype);
        _visionEncoder = new ClipVisionTransformer(config.ClipModelCfg.Vision.ToClip(), "vision_x image", Device, DType);
        _perceiver = new PerceiverResampler(config.Perceiver, Device, DType);
        var layers = new List<FlamingoLayer>();
        nn.Module Wrap(int i, nn.Module decoderLayer)
        {
            var gated = (i + 1) % config.CrossAttnEveryNLayers == 0
                ? new GatedCrossAttentionBlock(config.GatedCrossAttn, Device, DType)
                : null;
            var layer = new FlamingoLayer(i, gated, decoderLayer);
            layers.Add(layer);
            return layer;
        }
        var (language, text) = config.LanguageModel;
        _langEncoder = language.Build(language.WithVocabSize(text, config.LenTokenizer), Device, DType, Wrap);
        Layers = layers.ToArray();
        RegisterComponents();
        eval();
        foreach (var p in parameters()) p.requires_grad = false;
    }

    /// <summary>Loads a Flamingo folder: our <c>config.json</c> (every constructor argument) and the full
    /// state dict as <c>model.safetensors</c> (or sharded) or OpenFlamingo's <c>checkpoint.pt</c>; or a hub id
    /// in the local Hugging Face cache at <paramref name="revision"/>.</summary>
    /// <remarks><c>quantization</c>: weight-only quantization of the language model, applied tensor by tensor as the float
    /// checkpoint loads (see <see cref="WeightQuantization"/>); a folder saved quantized loads as saved.</remarks>
    public static FlamingoModel FromPretrained(string folder, Device? device = null, ScalarType? dtype = null,
        IProgress<LoadProgress>? progress = null, string? revision = null, WeightQuantization quantization = WeightQuantization.None)
    {
        folder = HubCache.Resolve(folder, revision);
        string pt = Path.Combine(folder, "checkpoint.pt");
        bool transformersLayout = CheckpointFolder.HasWeights(folder);
        using ITensorSource weights = transformersLayout || !File.Exists(pt) ? CheckpointFolder.Open(folder) : TorchCheckpointFile.Open(pt);
        return Load(FlamingoConfig.Load(Path.Combine(folder, "config.json")), weights, device, dtype, progress, quantization);
    }

    /// <summary>Loads OpenFlamingo as it is published: the open_clip vision tower's state dict, the
    /// language model's transformers folder, and the adapter <c>checkpoint.pt</c> (perceiver, gated
    /// blocks, trained embeddings). Every parameter must come from exactly one of them; the adapter's
    /// embeddings replace the language model's, as upstream's loading order makes them.</summary>
    /// <remarks><c>quantization</c>: weight-only quantization of the language model, applied tensor by tensor as the float
    /// checkpoint loads (see <see cref="WeightQuantization"/>); a folder saved quantized loads as saved.</remarks>
    public static FlamingoModel FromParts(FlamingoParts parts, Device? device = null, ScalarType? dtype = null, IProgress<LoadProgress>? progress = null,
        WeightQuantization quantization = WeightQuantization.None)
    {
        var lmConfig = PretrainedConfig.Read<TextConfig>(Path.Combine(parts.LanguageModelFolder, "config.json"));
        var lm = FlamingoConfig.HostFor(lmConfig, parts.LanguageModelFolder);
        ITensorSource adapter = parts.Adapter.EndsWith(".safetensors", StringComparison.OrdinalIgnoreCase)
            ? SafetensorsSource(parts.Adapter) : TorchCheckpointFile.Open(parts.Adapter);
        var vision = parts.VisionEncoder.EndsWith(".safetensors", StringComparison.OrdinalIgnoreCase)
            ? SafetensorsSource(parts.VisionEncoder) : TorchCheckpointFile.Open(parts.VisionEncoder);
        var lmFolder = GrowHead(CheckpointFolder.Open(parts.LanguageModelFolder), lm, lmConfig, adapter);
        // OpenFlamingo-3B's MPT-1B ships mosaic_gpt names: renamed to MPT's by the family's literal table.
        var lmRenames = new WeightMap { Renames = lm.Renames };
        string layersPath = lm.LayersPath!;
        TensorSourcePart Part(string name, ITensorSource source) =>
            new(name, source, published => OpenFlamingoComposition.ModelKey(name, published, layersPath, lmRenames));
        using var merged = new MergedTensorSource(
            [Part("vision encoder", vision), Part("language model", lmFolder), Part("adapter", adapter)],
            OpenFlamingoComposition.AdapterWins(lm).ToDictionary(e => e, _ => "adapter"),
            key => OpenFlamingoComposition.PublishedKey(key, layersPath, lmRenames));

        var config = parts.ToConfig(lm, lmConfig, adapter);
        config.Validate(parts.Adapter);
        return Load(config, merged, device, dtype, progress, quantization);
    }

    private static ITensorSource SafetensorsSource(string path) => new SingleSafetensors(path);

    // OpenFlamingo grows the vocabulary at load time; the adapter carries the trained input embeddings, but an untied head
    // whose name lacks "embed" (LLaMA's lm_head) is not in it, and a language-model folder saved before the resize (the
    // published LLaMA-7B) has the old row count. Upstream draws the new rows at random on every load; they get the mean row.
    private static ITensorSource GrowHead(ITensorSource lmFolder, LanguageModelDescriptor lm, TextConfig lmConfig, ITensorSource adapter)
    {
        if (lm.TiesWordEmbeddings(lmConfig) || adapter.Tensors.ContainsKey("lang_encoder." + lm.HeadKey)
            || !adapter.Tensors.TryGetValue("lang_encoder." + lm.EmbeddingKey, out var embeddings)
            || !lmFolder.Tensors.TryGetValue(lm.HeadKey, out var head) || head.Shape.Length != 2 || head.Shape[0] >= embeddings.Shape[0])
            return lmFolder;
        var grown = new GrownRowsSource(lmFolder, lm.HeadKey, embeddings.Shape[0]);
        System.Diagnostics.Trace.TraceWarning($"{lmFolder.Description}: {lm.HeadKey} has {head.Shape[0]} rows for OpenFlamingo's {embeddings.Shape[0]} tokens, " +
            $"and the adapter does not carry it: the {grown.Added} added tokens' rows are the mean row (upstream draws them at random on every load).");
        return grown;
    }

    private static FlamingoModel Load(FlamingoConfig config, ITensorSource weights, Device? device, ScalarType? dtype, IProgress<LoadProgress>? progress,
        WeightQuantization quantization)
    {
        var quantized = config.QuantizationConfig?.Kind("config.json") ?? quantization;
        return StateDictLoader.BuildAndLoad(d => new FlamingoModel(config, d, dtype).WithQuantizedLayout(quantized), device, weights, KeyMap(config),
            nameof(FlamingoModel), progress);
    }

    internal static WeightMap KeyMap(FlamingoConfig config)
    {
        var (language, text) = config.LanguageModel;
        return new() { Tied = language.TiedKeys(text).ToDictionary(kv => "lang_encoder." + kv.Key, kv => "lang_encoder." + kv.Value) };
    }

    /// <summary>Runs the model once: images through the vision encoder and perceiver, text through the
    /// language model with gated cross-attention to them.</summary>
    /// <param name="visionX">(B, T, F=1, 3, H, W) preprocessed images, T per sample in prompt order.</param>
    /// <param name="langX">(B, L) ids with one <c>&lt;image&gt;</c> per image, left-padded.</param>
    /// <param name="attentionMask">(B, L), or null for all ones.</param>
    public FlamingoForwardOutput Forward(Tensor visionX, Tensor langX, Tensor? attentionMask = null)
    {
        using var inference = inference_mode();
        using var scope = NewDisposeScope();
        var (tokens, pooled, media) = EncodeVision(visionX);
        var ids = langX.to(ScalarType.Int64, Device);
        var mask = attentionMask?.to(ScalarType.Int64, Device) ?? ones_like(ids);
        using var session = new FlamingoSession(this, media, generating: false);
        var logits = session.Forward(Host.EmbedTokens(ids), mask, null, ids);
        var output = new FlamingoForwardOutput(tokens, pooled, media, logits);
        foreach (var t in output.ByReferenceName.Values) t.MoveToOuterDisposeScope();
        return output;
    }

    /// <summary>Quantizes the language model's linear layers and the gated cross-attention blocks' (not its head or embeddings) in place; decode steps then read
    /// the integers (see <see cref="WeightQuantization"/>).</summary>
    /// <returns>the layers quantized.</returns>
    public int QuantizeLanguageModel(WeightQuantization kind)
    {
        var (prefixes, except) = QuantizedLayers;
        return QuantizedLinear.QuantizeAll(this, kind, prefixes, except);
    }

    // The layers weight-only quantization covers: the language model's linears and the gated blocks', not the head.
    private (string[] Prefixes, string[] Except) QuantizedLayers =>
        (["lang_encoder."], ["lang_encoder." + Config.LanguageModel.Descriptor.HeadKey.Replace(".weight", "", StringComparison.Ordinal)]);

    /// <summary>Gives the quantized layers their quantized layout, empty, for a checkpoint saved quantized to load into.</summary>
    internal FlamingoModel WithQuantizedLayout(WeightQuantization kind)
    {
        var (prefixes, except) = QuantizedLayers;
        QuantizedLinear.PrepareAll(this, kind, prefixes, except);
        return this;
    }


    /// <summary>Generates continuations of the prompts, as open_flamingo's <c>Flamingo.generate</c>: the
    /// images are encoded once, EOS defaults to <c>&lt;|endofchunk|&gt;</c>, and the result is the prompt
    /// followed by the new tokens (ended rows padded).</summary>
    public GenerationOutput Generate(Tensor visionX, Tensor langX, Tensor? attentionMask = null, GenerationOptions? options = null,
        CancellationToken cancellationToken = default) =>
        Generate(visionX, langX, attentionMask, options ?? new GenerationOptions(), null, null, cancellationToken);

    /// <summary><see cref="Generate(Tensor, Tensor, Tensor?, GenerationOptions?, CancellationToken)"/> with
    /// a decoder for stop strings and a per-step callback.</summary>
    public GenerationOutput Generate(Tensor visionX, Tensor langX, Tensor? attentionMask, GenerationOptions options,
        Func<IReadOnlyList<long>, string>? decode, Action<long[], bool[]>? onTokens, CancellationToken cancellationToken) =>
        Generate(visionX, langX, attentionMask, GenerationCall.Resolve(options, null, cancellationToken) with { Decode = decode, OnTokens = onTokens });

    /// <summary>Generation of one resolved call (see <see cref="GenerationCall"/>).</summary>
    internal GenerationOutput Generate(Tensor visionX, Tensor langX, Tensor? attentionMask, GenerationCall call)
    {
        var options = call.Options;
        using var inference = inference_mode();
        using var scope = NewDisposeScope();
        var (_, _, media) = EncodeVision(visionX);
        var ids = langX.to(ScalarType.Int64, Device);
        Shape.Require(ids, "lang_x", media.size(0), -1);
        var mask = attentionMask?.to(ScalarType.Int64, Device) ?? ones_like(ids);
        int prompt = (int)ids.size(1);
        // transformers counts max_length and min_length over prompt + new tokens when input_ids are given.
        var (maxNew, minNew) = options.ResolveLimits(prompt, prompt);
        var eos = (options.EosTokenIds ?? [Config.EocTokenId]).ToArray();
        long pad = options.PadTokenId ?? Config.PadTokenId ?? eos[0];
        using var session = new FlamingoSession(this, media, generating: true);
        var promptRows = ids.cpu();
        var request = new GenerationRequest
        {
            Model = session, PromptEmbeds = Host.EmbedTokens(ids), PromptMask = mask, PromptIds = ids,
            Call = call.Prefixing(row => promptRows[row].data<long>().ToArray()),
            MaxNewTokens = maxNew, MinNewTokens = minNew, Eos = eos, Pad = pad,
        };
        var output = Generation.Generator.Generate(request);
        var sequences = output.Sequences.Select((row, i) => promptRows[i].data<long>().ToArray().Concat(row).ToArray()).ToArray();
        return output with { Sequences = sequences };
    }

    /// <summary>(B, T, F, 3, H, W) → patch tokens, pooled embeddings and perceiver latents (B, T, n, Dv).</summary>
    private (Tensor Tokens, Tensor Pooled, Tensor Media) EncodeVision(Tensor visionX)
    {
        if (visionX.dim() != 6 || visionX.size(2) != 1)
            throw new ArgumentException($"vision_x must be (B, T_img, F=1, 3, H, W); got {Shape.Format(visionX.shape)}.", nameof(visionX));
        long b = visionX.size(0), t = visionX.size(1), f = visionX.size(2);
        var images = visionX.to(DType, Device).flatten(0, 2);                          // (B·T·F, 3, H, W)
        var hidden = _visionEncoder.forward(images);                                   // (B·T·F, 1 + v, Dv)
        var tokens = hidden.narrow(1, 1, hidden.size(1) - 1);                         // (B·T·F, v, Dv): the class token is only pooled
        var media = _perceiver.forward(tokens.view(b, t, f, tokens.size(1), tokens.size(2)));
        return (tokens, _visionEncoder.Pool(hidden), media);
    }
}

/// <summary>One request's view of a <see cref="FlamingoModel"/> as a language model: it owns the media
/// (perceiver output), the media keys and values of every gated block (computed once), and the media
/// positions, and passes them to each layer explicitly. Nothing is stored in the model's layers.</summary>
/// <remarks>
/// Text time mirrors open_flamingo 2.0.1's <c>FlamingoLMMixin.forward</c>: the running count of
/// <c>&lt;image&gt;</c> tokens over the ids fed. During generation, a step that feeds no image token
/// reuses the last conditioned positions and gives every new token the number of images they hold
/// (<c>use_cached_media</c>); a step that does feed one is conditioned on that step's ids alone, as upstream.
/// </remarks>
internal sealed class FlamingoSession(FlamingoModel model, Tensor media, bool generating) : ICausalLanguageModel, IDisposable
{
    private Tensor _media = media;
    private (Tensor Keys, Tensor Values)?[]? _mediaKv;
    private Tensor? _lastLocations;

    public Tensor EmbedTokens(Tensor inputIds) => model.Host.EmbedTokens(inputIds);

    public KvCache NewCache() => model.Host.NewCache();

    /// <inheritdoc/>
    public bool SelectRows(Tensor rows) => false;   // the media stays whole

    public Tensor Forward(Tensor inputsEmbeds, Tensor attentionMask, KvCache? cache, Tensor? inputIds = null)
    {
        if (inputIds is null) throw new ArgumentException("Flamingo needs the token ids of every position it is fed (to locate <image> tokens).");
        PrepareMedia(inputsEmbeds.size(0));
        using var scope = NewDisposeScope();
        var locations = inputIds.EqualTo(model.Config.MediaTokenId);                        // (B, Lnew)
        Tensor textTime;
        if (generating && _lastLocations is not null && !locations.any().item<bool>())
        {
            textTime = _lastLocations.sum(1, keepdim: true).expand(-1, inputIds.size(1));  // count of cached images
        }
        else
        {
            _lastLocations?.Dispose();
            _lastLocations = locations.to(ScalarType.Int64).DetachFromDisposeScope();
            textTime = _lastLocations.cumsum(1);
        }
        var media = new FlamingoMedia(_mediaKv!, textTime, _media.size(2));
        // generate() derives positions from the mask; a plain forward() counts them (RoPE models differ in pad rows).
        return model.Host.Forward(inputsEmbeds, attentionMask, cache, media, positionsFromMask: generating).MoveToOuterDisposeScope();
    }

    // Beam search runs B·beams rows: the media follow their rows (upstream repeat_interleaves vision_x).
    // The session owns what it derives (outside every dispose scope) until it is disposed.
    private void PrepareMedia(long rows)
    {
        if (_mediaKv is not null && _media.size(0) == rows) return;
        if (rows != _media.size(0))
        {
            if (rows % _media.size(0) != 0) throw new ArgumentException($"{rows} text rows for {_media.size(0)} media rows.");
            _media = _media.repeat_interleave(rows / _media.size(0), 0).DetachFromDisposeScope();
            _ownsMedia = true;
        }
        DisposeKv();
        _mediaKv = model.Layers.Select(l => l.GatedCrossAttention?.CrossAttention.MediaKeysValues(_media)).ToArray();
        foreach (var kv in _mediaKv)
        {
            kv?.Keys.DetachFromDisposeScope();
            kv?.Values.DetachFromDisposeScope();
        }
    }

    private bool _ownsMedia;

    private void DisposeKv()
    {
        foreach (var kv in _mediaKv ?? [])
        {
            kv?.Keys.Dispose();
            kv?.Values.Dispose();
        }
        _mediaKv = null;
    }

    public void Dispose()
    {
        DisposeKv();
        _lastLocations?.Dispose();
        if (_ownsMedia) _media.Dispose();
    }
}
