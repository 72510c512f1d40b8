using System.Text.Json.Serialization;
using Multimodal.Common;
using Multimodal.Language;
using Multimodal.QFormer;
using Multimodal.Vision;

namespace Multimodal.Blip2;

/// <summary>transformers v4.45.1 <c>Blip2Config</c> (configuration_blip_2.py): vision, Q-Former and
/// language-model configs plus the bridging settings. Read it with <see cref="Load"/>, which applies
/// <see cref="Normalize"/>.</summary>
public sealed record Blip2Config : PretrainedConfig
{
    /// <summary><c>model_type</c> (default "blip-2"): "blip-2".</summary>
    public string ModelType { get; init; } = "blip-2";

    /// <summary><c>vision_config</c>: The image encoder.</summary>
    public Blip2VisionConfig VisionConfig { get; init; } = new();

    /// <summary><c>qformer_config</c>: The Q-Former.</summary>
    public QFormerConfig QformerConfig { get; init; } = new();

    /// <summary>The language model; <c>model_type</c> picks the record (OPT when absent).</summary>
    public TextConfig TextConfig { get; init; } = LanguageModels.DefaultConfig("opt");

    /// <summary><c>num_query_tokens</c> (default 32): Learned query tokens.</summary>
    public int NumQueryTokens { get; init; } = 32;

    /// <summary>Width of the ITC projections (retrieval models).</summary>
    public int ImageTextHiddenSize { get; init; } = 256;

    /// <summary>When set, prompts carry <see cref="NumQueryTokens"/> tokens of this id whose embeddings
    /// are replaced by the projected queries; when null (the original layout) the queries are
    /// concatenated in front of the prompt.</summary>
    public int? ImageTokenIndex { get; init; }

    /// <summary><c>initializer_factor</c> (default 1.0): used in training only; inference reads it and ignores it.</summary>
    public double InitializerFactor { get; init; } = 1.0;

    /// <summary><c>initializer_range</c> (default 0.02): used in training only; inference reads it and ignores it.</summary>
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
        TextConfig = LanguageModels.TryFor(TextConfig)?.Normalize(TextConfig) ?? TextConfig,
        UseDecoderOnlyLanguageModel = TextConfig.IsDecoderOnly,
        TieWordEmbeddings = LanguageModels.TryFor(TextConfig)?.TiesWordEmbeddings(TextConfig) ?? TieWordEmbeddings,
    };

    /// <summary>Reads and normalizes a BLIP-2 <c>config.json</c>.</summary>
    /// <exception cref="ConfigException">the file is malformed or not a BLIP-2 config.</exception>
    public static Blip2Config Load(string path)
    {
        var config = Read<Blip2Config>(path);
        if (config.ModelType != "blip-2")
            throw new ConfigException(path, config.ModelType == "instructblip"
                ? "model_type is \"instructblip\": this is an InstructBLIP checkpoint, not BLIP-2; load it with InstructBlipForConditionalGeneration."
                : $"model_type is \"{config.ModelType}\"; a BLIP-2 checkpoint has \"blip-2\".");
        config = config.Normalize();
        config.Validate(path);
        return config;
    }

    /// <summary>Checks every size the modules are built from, so a bad config fails here, naming the key, and
    /// never in native code or in an allocation.</summary>
    public void Validate(string source)
    {
        var v = VisionConfig;
        var q = QformerConfig;
        var checks = new ConfigChecks(source)
            .Heads("vision_config.hidden_size", v.HiddenSize, "vision_config.num_attention_heads", v.NumAttentionHeads)
            .Size("vision_config.intermediate_size", v.IntermediateSize)
            .Layers("vision_config.num_hidden_layers", v.NumHiddenLayers)
            .Patches("vision_config.", v.ImageSize, v.PatchSize)
            .Heads("qformer_config.hidden_size", q.HiddenSize, "qformer_config.num_attention_heads", q.NumAttentionHeads)
            .Size("qformer_config.intermediate_size", q.IntermediateSize)
            .Layers("qformer_config.num_hidden_layers", q.NumHiddenLayers)
            .Size("qformer_config.cross_attention_frequency", q.CrossAttentionFrequency, ConfigChecks.MaxLayers)
            .Vocabulary("qformer_config.vocab_size", q.VocabSize)
            .Vocabulary("qformer_config.max_position_embeddings", q.MaxPositionEmbeddings)
            .Size("num_query_tokens", NumQueryTokens, 100_000)
            .Size("image_text_hidden_size", ImageTextHiddenSize);
        // An unimplemented model_type is refused when the model is built, naming the wrapper's supported types.
        if (LanguageModels.TryFor(TextConfig) is { } language)
        {
            language.Validate(TextConfig, checks, "text_config.");
            checks.Id("image_token_index", ImageTokenIndex, language.VocabSize(TextConfig));
        }
        checks.ThrowIfAny();
    }
}
