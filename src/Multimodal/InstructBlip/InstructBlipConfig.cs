using System.Text.Json.Serialization;
using Multimodal.Blip2;
using Multimodal.Common;
using Multimodal.Language;
using Multimodal.QFormer;
using Multimodal.Vision;

namespace Multimodal.InstructBlip;

/// <summary>transformers v4.45 <c>InstructBlipConfig</c> (configuration_instructblip.py); initializers are upstream's
/// defaults. The vision and Q-Former settings are BLIP-2's (same keys, other <c>model_type</c> names).</summary>
public sealed record InstructBlipConfig : PretrainedConfig
{
    /// <summary><c>model_type</c> (default "instructblip"): "instructblip".</summary>
    public string ModelType { get; init; } = "instructblip";
    /// <summary><c>vision_config</c>: The EVA ViT.</summary>
    public Blip2VisionConfig VisionConfig { get; init; } = new();
    /// <summary>The Q-Former (it always reads the instruction).</summary>
    public QFormerConfig QformerConfig { get; init; } = new();
    /// <summary>The language model: LLaMA (Vicuna) or T5 (Flan-T5), the two InstructBLIP is published with
    /// (upstream's class defaults to OPT, which no checkpoint uses; it is refused).</summary>
    public TextConfig TextConfig { get; init; } = LanguageModels.DefaultConfig("opt");
    /// <summary><c>num_query_tokens</c> (default 32): Query tokens.</summary>
    public int NumQueryTokens { get; init; } = 32;
    /// <summary>Processor-expanded layout's image token, or null (queries in front of the prompt).</summary>
    public int? ImageTokenIndex { get; init; }
    /// <summary><c>initializer_factor</c> (default 1.0): used in training only; inference reads it and ignores it.</summary>
    public double InitializerFactor { get; init; } = 1.0;
    /// <summary><c>initializer_range</c> (default 0.02): used in training only; inference reads it and ignores it.</summary>
    public double InitializerRange { get; init; } = 0.02;
    /// <summary><c>use_decoder_only_language_model</c> (default true): Derived from the text config.</summary>
    public bool UseDecoderOnlyLanguageModel { get; init; } = true;
    /// <summary>Written by save_pretrained; the text config decides.</summary>
    public bool TieWordEmbeddings { get; init; }

    /// <inheritdoc/>
    [JsonIgnore]
    protected override IEnumerable<(string Prefix, PretrainedConfig Config)> Children =>
        [("vision_config", VisionConfig), ("qformer_config", QformerConfig), ("text_config", TextConfig)];

    /// <summary>The id <c>generate()</c> puts in front of a decoder-only model's new tokens: 2 when
    /// <c>text_config.architectures[0]</c> is "LLaMAForCausalLM" (the authors' Vicuna tokenizer used &lt;/s&gt; as BOS),
    /// else <c>text_config.bos_token_id</c>; null when <c>text_config.architectures</c> is missing (upstream raises then).</summary>
    [JsonIgnore] public long? PrependedTokenId => TextConfig.Architectures is not { Count: > 0 } arch ? null
        : arch[0] == "LLaMAForCausalLM" ? 2
        : LanguageModels.TryFor(TextConfig)?.Tokens(TextConfig).Bos;

    /// <summary>Reads and validates config.json.</summary>
    /// <exception cref="ConfigException">malformed, not InstructBLIP, or sizes that cannot be built.</exception>
    public static InstructBlipConfig Load(string path)
    {
        var config = Read<InstructBlipConfig>(path);
        if (config.ModelType != "instructblip")
            throw new ConfigException(path, config.ModelType == "blip-2"
                ? "model_type is \"blip-2\": this is a BLIP-2 checkpoint, not InstructBLIP; load it with Blip2ForConditionalGeneration (or Blip2Captioner)."
                : $"model_type is \"{config.ModelType}\"; an InstructBLIP checkpoint has \"instructblip\".");
        config = config with { QformerConfig = config.QformerConfig with { EncoderHiddenSize = config.VisionConfig.HiddenSize } };
        if (config.TextConfig.ModelType is not ("llama" or "t5"))
            throw new ConfigException(path, $"text_config.model_type is \"{config.TextConfig.ModelType}\"; InstructBLIP is published with \"llama\" (Vicuna) or \"t5\" (Flan-T5).");
        // The shared checks are BLIP-2's: same vision, Q-Former and language-model keys.
        new Blip2Config
        {
            VisionConfig = config.VisionConfig, QformerConfig = config.QformerConfig, TextConfig = config.TextConfig,
            NumQueryTokens = config.NumQueryTokens, ImageTokenIndex = config.ImageTokenIndex,
        }.Validate(path);
        return config;
    }
}
