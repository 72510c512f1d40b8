using System.Text.Json.Serialization;
using Multimodal.Common;

namespace Multimodal.Idefics;

/// <summary>transformers v4.44.2 <c>IdeficsVisionConfig</c>; initializers are upstream's defaults.</summary>
public sealed record IdeficsVisionConfig : PretrainedConfig
{
    /// <summary><c>model_type</c> (default "idefics"): "idefics".</summary>
    public string ModelType { get; init; } = "idefics";
    /// <summary><c>embed_dim</c> (default 768): Width.</summary>
    public int EmbedDim { get; init; } = 768;
    /// <summary><c>image_size</c> (default 224): Input resolution.</summary>
    public int ImageSize { get; init; } = 224;
    /// <summary><c>intermediate_size</c> (default 5120): MLP width.</summary>
    public int IntermediateSize { get; init; } = 5120;
    /// <summary><c>patch_size</c> (default 14): Patch size.</summary>
    public int PatchSize { get; init; } = 14;
    /// <summary><c>num_hidden_layers</c> (default 32): Layers.</summary>
    public int NumHiddenLayers { get; init; } = 32;
    /// <summary><c>num_attention_heads</c> (default 16): Heads.</summary>
    public int NumAttentionHeads { get; init; } = 16;
    /// <summary><c>num_channels</c> (default 3): Channels.</summary>
    public int NumChannels { get; init; } = 3;
    /// <summary><c>hidden_act</c> (default "gelu"): MLP activation.</summary>
    public string HiddenAct { get; init; } = "gelu";
    /// <summary><c>layer_norm_eps</c> (default 1e-5): LayerNorm epsilon.</summary>
    public double LayerNormEps { get; init; } = 1e-5;
    /// <summary><c>attention_dropout</c> (default 0): used in training only; inference reads it and ignores it.</summary>
    public double AttentionDropout { get; init; }
    /// <summary><c>initializer_range</c> (default 0.02): used in training only; inference reads it and ignores it.</summary>
    public double InitializerRange { get; init; } = 0.02;
    /// <summary><c>initializer_factor</c> (default 1.0): used in training only; inference reads it and ignores it.</summary>
    public double InitializerFactor { get; init; } = 1.0;

    /// <summary>The CLIP tower this describes (no projection: IDEFICS feeds the perceiver the tokens).</summary>
    internal Vision.ClipVisionSettings ToClip() => new(ImageSize, PatchSize, NumChannels, EmbedDim, NumHiddenLayers,
        NumAttentionHeads, IntermediateSize, LayerNormEps, HiddenAct, "vision_config.hidden_act", ProjectionDim: null);
}

/// <summary>transformers v4.44.2 <c>IdeficsPerceiverConfig</c>; initializers are upstream's defaults.</summary>
public sealed record IdeficsPerceiverConfig : PretrainedConfig
{
    /// <summary><c>model_type</c> (default "idefics"): "idefics".</summary>
    public string ModelType { get; init; } = "idefics";
    /// <summary><c>use_resampler</c> (default false): Whether the perceiver is used.</summary>
    public bool UseResampler { get; init; }
    /// <summary><c>resampler_n_latents</c> (default 64): Latents.</summary>
    public int ResamplerNLatents { get; init; } = 64;
    /// <summary><c>resampler_depth</c> (default 6): Layers.</summary>
    public int ResamplerDepth { get; init; } = 6;
    /// <summary><c>resampler_n_heads</c> (default 16): Heads.</summary>
    public int ResamplerNHeads { get; init; } = 16;
    /// <summary><c>resampler_head_dim</c> (default 96): Head width.</summary>
    public int ResamplerHeadDim { get; init; } = 96;
    /// <summary><c>qk_layer_norms_perceiver</c> (default false): LayerNorm on q and k per head.</summary>
    public bool QkLayerNormsPerceiver { get; init; }
}

/// <summary>transformers v4.44.2 <c>IdeficsConfig</c> (configuration_idefics.py): a LLaMA decoder with
/// gated cross-attention, a CLIP vision tower and a perceiver; initializers are upstream's defaults.</summary>
public sealed record IdeficsConfig : PretrainedConfig
{
    /// <summary><c>model_type</c> (default "idefics"): "idefics".</summary>
    public string ModelType { get; init; } = "idefics";
    /// <summary>Text vocabulary (ids at and above it use the decoupled additional embeddings).</summary>
    public int VocabSize { get; init; } = 32000;
    /// <summary>Added tokens (<c>&lt;fake_token_around_image&gt;</c>, <c>&lt;image&gt;</c>).</summary>
    public int AdditionalVocabSize { get; init; }
    /// <summary><c>hidden_size</c> (default 4096): Width.</summary>
    public int HiddenSize { get; init; } = 4096;
    /// <summary><c>intermediate_size</c> (default 11008): MLP width.</summary>
    public int IntermediateSize { get; init; } = 11008;
    /// <summary><c>num_hidden_layers</c> (default 32): Decoder layers.</summary>
    public int NumHiddenLayers { get; init; } = 32;
    /// <summary><c>num_attention_heads</c> (default 32): Heads.</summary>
    public int NumAttentionHeads { get; init; } = 32;
    /// <summary><c>dropout</c> (default 0): used in training only; inference reads it and ignores it.</summary>
    public double Dropout { get; init; }
    /// <summary><c>hidden_act</c> (default "silu"): MLP activation.</summary>
    public string HiddenAct { get; init; } = "silu";
    /// <summary><c>initializer_range</c> (default 0.02): used in training only; inference reads it and ignores it.</summary>
    public double InitializerRange { get; init; } = 0.02;
    /// <summary><c>alpha_initializer</c> (default "zeros"): Gate initialisation (training only).</summary>
    public string AlphaInitializer { get; init; } = "zeros";
    /// <summary><c>alphas_initializer_range</c> (default 0): used in training only; inference reads it and ignores it.</summary>
    public double AlphasInitializerRange { get; init; }
    /// <summary>"float" (one gate value) or "vector" (one per channel).</summary>
    public string AlphaType { get; init; } = "float";
    /// <summary><c>rms_norm_eps</c> (default 1e-6): RMSNorm epsilon.</summary>
    public double RmsNormEps { get; init; } = 1e-6;
    /// <summary>Whether generation uses the KV cache by default.</summary>
    public bool UseCache { get; init; } = true;
    /// <summary><c>pad_token_id</c> (default 0): Padding id.</summary>
    public int PadTokenId { get; init; }
    /// <summary><c>bos_token_id</c> (default 1): Begin-of-sequence id.</summary>
    public int BosTokenId { get; init; } = 1;
    /// <summary><c>eos_token_id</c> (default 2): End-of-sequence id.</summary>
    public int EosTokenId { get; init; } = 2;
    /// <summary><c>tie_word_embeddings</c> (default false): Untied head in every published IDEFICS.</summary>
    public bool TieWordEmbeddings { get; init; }
    /// <summary>A gated block before decoder layer i when i % interval == 0.</summary>
    public int CrossLayerInterval { get; init; } = 1;
    /// <summary>RMSNorm on q and k in the gated cross-attention.</summary>
    public bool QkLayerNorms { get; init; }
    /// <summary><c>freeze_text_layers</c> (default true): used in training only; inference reads it and ignores it.</summary>
    public bool FreezeTextLayers { get; init; } = true;
    /// <summary><c>freeze_text_module_exceptions</c> (default []): used in training only; inference reads it and ignores it.</summary>
    public IReadOnlyList<string> FreezeTextModuleExceptions { get; init; } = [];
    /// <summary><c>freeze_lm_head</c> (default false): used in training only; inference reads it and ignores it.</summary>
    public bool FreezeLmHead { get; init; }
    /// <summary><c>freeze_vision_layers</c> (default true): used in training only; inference reads it and ignores it.</summary>
    public bool FreezeVisionLayers { get; init; } = true;
    /// <summary><c>freeze_vision_module_exceptions</c> (default []): used in training only; inference reads it and ignores it.</summary>
    public IReadOnlyList<string> FreezeVisionModuleExceptions { get; init; } = [];
    /// <summary>Whether the perceiver resamples the image features.</summary>
    public bool UseResampler { get; init; }
    /// <summary><c>vision_config</c>: The vision tower.</summary>
    public IdeficsVisionConfig VisionConfig { get; init; } = new();
    /// <summary><c>perceiver_config</c>: The perceiver.</summary>
    public IdeficsPerceiverConfig PerceiverConfig { get; init; } = new();

    /// <inheritdoc/>
    [JsonIgnore]
    protected override IEnumerable<(string Prefix, PretrainedConfig Config)> Children =>
        [("vision_config", VisionConfig), ("perceiver_config", PerceiverConfig)];

    /// <summary>Reads and checks an IDEFICS <c>config.json</c>.</summary>
    public static IdeficsConfig Load(string path)
    {
        var config = Read<IdeficsConfig>(path);
        if (config.ModelType != "idefics") throw new ConfigException(path, $"model_type is \"{config.ModelType}\"; an IDEFICS checkpoint has \"idefics\".");
        if (!config.UseResampler) throw new NotSupportedException($"{path}: use_resampler = false is not supported (every published IDEFICS uses the perceiver).");
        if (config.AlphaType is not ("float" or "vector")) throw new ConfigException(path, $"alpha_type \"{config.AlphaType}\" must be \"float\" or \"vector\".");
        var v = config.VisionConfig;
        var p = config.PerceiverConfig;
        new ConfigChecks(path)
            .Heads("hidden_size", config.HiddenSize, "num_attention_heads", config.NumAttentionHeads)
            .Size("intermediate_size", config.IntermediateSize)
            .Layers("num_hidden_layers", config.NumHiddenLayers)
            .Vocabulary("vocab_size", config.VocabSize)
            .Require(config.AdditionalVocabSize is >= 0 and <= ConfigChecks.MaxVocabulary, $"additional_vocab_size = {config.AdditionalVocabSize} must be between 0 and {ConfigChecks.MaxVocabulary}")
            .Size("cross_layer_interval", config.CrossLayerInterval, ConfigChecks.MaxLayers)
            .Heads("vision_config.embed_dim", v.EmbedDim, "vision_config.num_attention_heads", v.NumAttentionHeads)
            .Size("vision_config.intermediate_size", v.IntermediateSize)
            .Layers("vision_config.num_hidden_layers", v.NumHiddenLayers)
            .Patches("vision_config.", v.ImageSize, v.PatchSize)
            .Require(v.NumChannels == 3, $"vision_config.num_channels = {v.NumChannels} must be 3 (RGB)")
            .Size("perceiver_config.resampler_n_latents", p.ResamplerNLatents, 100_000)
            .Layers("perceiver_config.resampler_depth", p.ResamplerDepth)
            .Size("perceiver_config.resampler_n_heads", p.ResamplerNHeads)
            .Size("perceiver_config.resampler_head_dim", p.ResamplerHeadDim)
            .ThrowIfAny();
        return config;
    }
}
