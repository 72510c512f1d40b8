using System.Text.Json.Serialization;
using Multimodal.Common;
using Multimodal.Language;
using Multimodal.Language.Opt;
using Multimodal.QFormer;
using Multimodal.Vision;

namespace Multimodal.Blip2;

/// <summary>transformers v4.45.1 <c>Blip2Config</c> (configuration_blip_2.py): vision, Q-Former and
/// language-model configs plus the bridging settings. Read it with <see cref="Load"/>, which applies
/// <see cref="Normalize"/>.</summary>
public sealed record Blip2Config : PretrainedConfig
{
    /// <summary>"blip-2".</summary>
    public string ModelType { get; init; } = "blip-2";

    /// <summary>The image encoder.</summary>
    public Blip2VisionConfig VisionConfig { get; init; } = new();

    /// <summary>The Q-Former.</summary>
    public QFormerConfig QformerConfig { get; init; } = new();

    /// <summary>The language model; <c>model_type</c> picks the record (OPT when absent).</summary>
    public TextConfig TextConfig { get; init; } = new OptConfig();

    /// <summary>Learned query tokens.</summary>
    public int NumQueryTokens { get; init; } = 32;

    /// <summary>Width of the ITC projections (retrieval models).</summary>
    public int ImageTextHiddenSize { get; init; } = 256;

    /// <summary>When set, prompts carry <see cref="NumQueryTokens"/> tokens of this id whose embeddings
    /// are replaced by the projected queries; when null (the original layout) the queries are
    /// concatenated in front of the prompt.</summary>
    public int? ImageTokenIndex { get; init; }

    /// <summary>Training only.</summary>
    public double InitializerFactor { get; init; } = 1.0;

    /// <summary>Training only.</summary>
    public double InitializerRange { get; init; } = 0.02;

    /// <summary>Derived from the text config's type by <see cref="Normalize"/>.</summary>
    public bool UseDecoderOnlyLanguageModel { get; init; } = true;

    /// <summary>Derived from the text config by <see cref="Normalize"/>.</summary>
    public bool TieWordEmbeddings { get; init; } = true;

    /// <inheritdoc/>
    [JsonIgnore]
    protected override IEnumerable<(string Prefix, PretrainedConfig Config)> Children =>
        [("vision_config", VisionConfig), ("qformer_config", QformerConfig), ("text_config", TextConfig)];

    /// <summary>Applies the derivations <c>Blip2Config.__init__</c> makes: the Q-Former's
    /// <c>encoder_hidden_size</c> is the vision width, and decoder-only-ness and tying follow the text model.</summary>
    public Blip2Config Normalize() => this with
    {
        QformerConfig = QformerConfig with { EncoderHiddenSize = VisionConfig.HiddenSize },
        // OPTConfig.__init__ stores word_embed_proj_dim = hidden_size when it is not given.
        TextConfig = TextConfig is OptConfig o ? o with { WordEmbedProjDim = o.EmbedDim } : TextConfig,
        UseDecoderOnlyLanguageModel = TextConfig.IsDecoderOnly,
        TieWordEmbeddings = TextConfig switch
        {
            OptConfig opt => opt.TieWordEmbeddings,
            Language.T5.T5Config t5 => t5.TieWordEmbeddings,
            _ => TieWordEmbeddings,
        },
    };

    /// <summary>Reads and normalizes a BLIP-2 <c>config.json</c>.</summary>
    /// <exception cref="ConfigException">the file is malformed or not a BLIP-2 config.</exception>
    public static Blip2Config Load(string path)
    {
        var config = Read<Blip2Config>(path);
        if (config.ModelType != "blip-2")
            throw new ConfigException(path, $"model_type is \"{config.ModelType}\"; a BLIP-2 checkpoint has \"blip-2\".");
        config = config.Normalize();
        config.Validate(path);
        return config;
    }

    /// <summary>Checks the sizes the modules rely on, so a bad config fails here and not in native code.</summary>
    public void Validate(string source)
    {
        var problems = new List<string>();
        void Heads(string name, int width, int heads)
        {
            if (width <= 0 || heads <= 0 || width % heads != 0)
                problems.Add($"{name}: hidden size {width} must be a positive multiple of num_attention_heads {heads}");
        }
        Heads("vision_config", VisionConfig.HiddenSize, VisionConfig.NumAttentionHeads);
        Heads("qformer_config", QformerConfig.HiddenSize, QformerConfig.NumAttentionHeads);
        if (VisionConfig.PatchSize <= 0 || VisionConfig.ImageSize < VisionConfig.PatchSize)
            problems.Add($"vision_config: image_size {VisionConfig.ImageSize} and patch_size {VisionConfig.PatchSize} give no patches");
        if (QformerConfig.CrossAttentionFrequency <= 0)
            problems.Add($"qformer_config: cross_attention_frequency {QformerConfig.CrossAttentionFrequency} must be positive");
        if (NumQueryTokens <= 0) problems.Add($"num_query_tokens {NumQueryTokens} must be positive");
        if (TextConfig is OptConfig opt)
        {
            Heads("text_config", opt.HiddenSize, opt.NumAttentionHeads);
            if (opt.VocabSize <= 0) problems.Add($"text_config: vocab_size {opt.VocabSize} must be positive");
            if (ImageTokenIndex is int idx && (idx < 0 || idx >= opt.VocabSize))
                problems.Add($"image_token_index {idx} is outside the vocabulary (size {opt.VocabSize})");
        }
        if (TextConfig is Language.T5.T5Config t)
        {
            if (t.DModel <= 0 || t.NumHeads <= 0 || t.DKv <= 0) problems.Add("text_config: d_model, num_heads and d_kv must be positive");
            if (t.FeedForwardProj is not ("relu" or "gated-gelu" or "gelu" or "gated-relu" or "gated-silu"))
                problems.Add($"text_config: feed_forward_proj \"{t.FeedForwardProj}\" is not supported");
        }
        if (problems.Count > 0) throw new ConfigException(source, string.Join("; ", problems));
    }
}
