using System.Text.Json;
using System.Text.Json.Serialization;
using Multimodal.Common;
using Multimodal.Language;
using Multimodal.Vision;

namespace Multimodal.Flamingo;

/// <summary>open_flamingo 2.0.1 <c>PerceiverResampler</c> constructor arguments; defaults are upstream's.</summary>
public sealed record PerceiverConfig
{
    /// <summary><c>dim</c> (default 1024): Width (the vision width).</summary>
    public int Dim { get; init; } = 1024;
    /// <summary><c>depth</c> (default 6): Layers (6 in published checkpoints).</summary>
    public int Depth { get; init; } = 6;
    /// <summary><c>dim_head</c> (default 64): Head width.</summary>
    public int DimHead { get; init; } = 64;
    /// <summary><c>heads</c> (default 8): Heads.</summary>
    public int Heads { get; init; } = 8;
    /// <summary>Latents per image (64 in published checkpoints).</summary>
    public int NumLatents { get; init; } = 64;
    /// <summary>Media-time embeddings (unused by OpenFlamingo v2).</summary>
    public int? MaxNumMedia { get; init; }
    /// <summary>Frame embeddings (unused by OpenFlamingo v2).</summary>
    public int? MaxNumFrames { get; init; }
    /// <summary><c>ff_mult</c> (default 4): FFN width / width.</summary>
    public int FfMult { get; init; } = 4;
}

/// <summary>open_flamingo 2.0.1 <c>GatedCrossAttentionBlock</c> constructor arguments; defaults are upstream's.</summary>
public sealed record GatedCrossAttentionConfig
{
    /// <summary><c>dim</c> (default 2048): Text width.</summary>
    public int Dim { get; init; } = 2048;
    /// <summary><c>dim_visual</c> (default 1024): Visual width.</summary>
    public int DimVisual { get; init; } = 1024;
    /// <summary>Head width (64 whatever the model width).</summary>
    public int DimHead { get; init; } = 64;
    /// <summary><c>heads</c> (default 8): Heads (8 whatever the model width).</summary>
    public int Heads { get; init; } = 8;
    /// <summary><c>ff_mult</c> (default 4): FFN width / width.</summary>
    public int FfMult { get; init; } = 4;
    /// <summary>Tokens see only the last image at or before them.</summary>
    public bool OnlyAttendImmediateMedia { get; init; } = true;
}

/// <summary>An open_clip model config (<c>open_clip/model_configs/*.json</c> format).</summary>
public sealed record OpenClipModelConfig
{
    /// <summary>CLIP embedding width (the output of <c>visual.proj</c>).</summary>
    public int EmbedDim { get; init; } = 512;
    /// <summary><c>quick_gelu</c> (default false): QuickGELU (OpenAI-trained towers).</summary>
    public bool QuickGelu { get; init; }
    /// <summary><c>vision_cfg</c>: The vision tower.</summary>
    public OpenClipVisionConfig VisionCfg { get; init; } = new();
    /// <summary><c>text_cfg</c> (default null): The text tower (not used by Flamingo).</summary>
    public JsonElement? TextCfg { get; init; }

    /// <summary>The vision settings with the model-level values folded in.</summary>
    public OpenClipVisionConfig Vision => VisionCfg with { OutputDim = EmbedDim, QuickGelu = QuickGelu };
}

/// <summary>Every constructor argument of an OpenFlamingo model (open_flamingo 2.0.1
/// <c>create_model_and_transforms</c> + <c>Flamingo</c>). OpenFlamingo publishes no config file: this
/// record is what our <c>config.json</c> for a Flamingo folder holds, and what
/// <c>FlamingoModel.FromParts</c> assembles from the open_clip and language-model configs.</summary>
public sealed record FlamingoConfig
{
    /// <summary>A free-text note.</summary>
    [JsonPropertyName("_comment")] public string? Comment { get; init; }
    /// <summary>open_flamingo version the weights were made with.</summary>
    public string? OpenFlamingoVersion { get; init; }
    /// <summary><c>clip_vision_encoder_path</c> (default null): open_clip model name, e.g. "ViT-L-14".</summary>
    public string? ClipVisionEncoderPath { get; init; }
    /// <summary><c>clip_model_cfg</c>: The open_clip model config.</summary>
    public OpenClipModelConfig ClipModelCfg { get; init; } = new();
    /// <summary>Flamingo reads the patch tokens (always true).</summary>
    public bool VisionEncoderOutputTokens { get; init; } = true;
    /// <summary>Upstream language model class, e.g. "transformers.MptForCausalLM".</summary>
    public string? LangEncoderClass { get; init; }
    /// <summary>The language model's config; <c>model_type</c> picks the record.</summary>
    public TextConfig? LangEncoderConfig { get; init; }
    /// <summary>Where the decoder layers live ("transformer.blocks", "gpt_neox.layers").</summary>
    public string? DecoderLayersAttrName { get; init; }
    /// <summary>Vocabulary after OpenFlamingo's added tokens (the LM embeddings are resized to it).</summary>
    public int LenTokenizer { get; init; }
    /// <summary><c>&lt;|endofchunk|&gt;</c>: the default end of generation.</summary>
    public int EocTokenId { get; init; }
    /// <summary><c>&lt;image&gt;</c>.</summary>
    public int MediaTokenId { get; init; }
    /// <summary><c>&lt;PAD&gt;</c>.</summary>
    public int? PadTokenId { get; init; }
    /// <summary><c>vis_dim</c> (default 0): Vision width.</summary>
    public int VisDim { get; init; }
    /// <summary><c>lang_dim</c> (default 0): Language model width.</summary>
    public int LangDim { get; init; }
    /// <summary>A gated block before decoder layer i when (i + 1) % n == 0.</summary>
    public int CrossAttnEveryNLayers { get; init; } = 1;
    /// <summary><c>perceiver</c>: The perceiver.</summary>
    public PerceiverConfig Perceiver { get; init; } = new();
    /// <summary><c>gated_cross_attn</c>: The gated cross-attention blocks.</summary>
    public GatedCrossAttentionConfig GatedCrossAttn { get; init; } = new();
    /// <summary><c>quantization_config</c>: set in a folder saved quantized (see <see cref="Common.QuantizationConfig"/>).</summary>
    public QuantizationConfig? QuantizationConfig { get; init; }

    /// <summary>Reads a Flamingo <c>config.json</c>.</summary>
    public static FlamingoConfig Load(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"Config file '{path}' does not exist.", path);
        FlamingoConfig config;
        try
        {
            config = JsonSerializer.Deserialize<FlamingoConfig>(File.ReadAllText(path), PretrainedConfig.JsonOptions)
                     ?? throw new ConfigException(path, "the file holds JSON null.");
        }
        catch (JsonException e)
        {
            throw new ConfigException(path, $"invalid JSON at {e.Path}: {e.Message}", e);
        }
        config.Validate(path);
        return config;
    }

    /// <summary>The language model's descriptor and its normalized config.</summary>
    internal (LanguageModelDescriptor Descriptor, TextConfig Config) LanguageModel
    {
        get
        {
            var language = HostFor(LangEncoderConfig, "lang_encoder_config");
            return (language, language.Normalize(LangEncoderConfig!));
        }
    }

    /// <summary>The descriptor of a language model Flamingo can wrap (a decoder-only model with a known layer path).</summary>
    internal static LanguageModelDescriptor HostFor(TextConfig? config, string source) =>
        (config is null ? null : LanguageModels.TryFor(config)) is { LayersPath: not null } d ? d
        : throw new NotSupportedException($"{source}: Flamingo with a \"{config?.ModelType}\" language model is not implemented; supported: " +
            string.Join(", ", LanguageModels.ModelTypes.Where(t => LanguageModels.Find(t)!.LayersPath is not null)) + ".");

    /// <summary>Checks what the modules rely on.</summary>
    public void Validate(string source)
    {
        var language = HostFor(LangEncoderConfig, source);
        var vision = ClipModelCfg.VisionCfg;
        var checks = new ConfigChecks(source)
            .Size("cross_attn_every_n_layers", CrossAttnEveryNLayers, ConfigChecks.MaxLayers)
            .Vocabulary("len_tokenizer", LenTokenizer)
            .Size("vis_dim", VisDim).Size("lang_dim", LangDim)
            .Size("perceiver.dim", Perceiver.Dim).Layers("perceiver.depth", Perceiver.Depth).Size("perceiver.dim_head", Perceiver.DimHead)
            .Size("perceiver.heads", Perceiver.Heads).Size("perceiver.num_latents", Perceiver.NumLatents, 100_000).Size("perceiver.ff_mult", Perceiver.FfMult, 1_000)
            .Size("gated_cross_attn.dim", GatedCrossAttn.Dim).Size("gated_cross_attn.dim_visual", GatedCrossAttn.DimVisual)
            .Size("gated_cross_attn.dim_head", GatedCrossAttn.DimHead).Size("gated_cross_attn.heads", GatedCrossAttn.Heads)
            .Size("gated_cross_attn.ff_mult", GatedCrossAttn.FfMult, 1_000)
            .Heads("clip_model_cfg.vision_cfg.width", vision.Width, "clip_model_cfg.vision_cfg.head_width", vision.HeadWidth)
            .Layers("clip_model_cfg.vision_cfg.layers", vision.Layers)
            .Patches("clip_model_cfg.vision_cfg.", vision.ImageSize, vision.PatchSize)
            .Size("clip_model_cfg.embed_dim", ClipModelCfg.EmbedDim);
        language.Validate(LangEncoderConfig!, checks, "lang_encoder_config.");
        checks.Require(language.HiddenSize(LangEncoderConfig!) == LangDim,
                $"lang_dim = {LangDim} is not the language model's width {language.HiddenSize(LangEncoderConfig!)}")
            .Require(GatedCrossAttn.Dim == LangDim, $"gated_cross_attn.dim = {GatedCrossAttn.Dim} is not lang_dim = {LangDim}")
            .ThrowIfAny();
        if (MediaTokenId < 0 || MediaTokenId >= LenTokenizer || EocTokenId < 0 || EocTokenId >= LenTokenizer)
            throw new ConfigException(source, $"media_token_id {MediaTokenId} and eoc_token_id {EocTokenId} must lie in the vocabulary of {LenTokenizer}.");
    }
}
