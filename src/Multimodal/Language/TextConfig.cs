using System.Text.Json;
using System.Text.Json.Serialization;
using Multimodal.Common;

namespace Multimodal.Language;

/// <summary>Base of the language-model configs a multimodal config nests as <c>text_config</c>; the
/// concrete type is chosen by <c>model_type</c>, as transformers' <c>CONFIG_MAPPING</c> does.</summary>
[JsonConverter(typeof(TextConfigConverter))]
public abstract record TextConfig : PretrainedConfig
{
    /// <summary>The upstream <c>model_type</c> ("opt", "t5", ...).</summary>
    public abstract string ModelType { get; init; }

    /// <summary>Whether the LM is decoder-only (<c>MODEL_FOR_CAUSAL_LM_MAPPING</c>) rather than encoder-decoder.</summary>
    [JsonIgnore] public abstract bool IsDecoderOnly { get; }

    /// <summary>Positions the model was trained for (vLLM's <c>max_model_len</c>); null where the config names none
    /// (T5's relative positions). Prompts longer than this are refused before tokenizing (see
    /// <see cref="Processing.TextLimit"/>).</summary>
    [JsonIgnore] public virtual int? ContextLength => null;
}

/// <summary>A <c>text_config</c> whose <c>model_type</c> has no implementation yet; kept so the config
/// still reads, and rejected with a clear message when a model is built from it.</summary>
public sealed record UnsupportedTextConfig : TextConfig
{
    /// <inheritdoc/>
    public override string ModelType { get; init; } = "";

    /// <inheritdoc/>
    [JsonIgnore] public override bool IsDecoderOnly => false;
}

/// <summary>Picks the <see cref="TextConfig"/> subtype from <c>model_type</c> (default "opt", as
/// <c>Blip2Config</c> does when it is absent).</summary>
internal sealed class TextConfigConverter : JsonConverter<TextConfig>
{
    public override TextConfig? Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options)
    {
        using var doc = JsonDocument.ParseValue(ref reader);
        var element = doc.RootElement;
        if (element.ValueKind == JsonValueKind.Null) return null;
        if (element.ValueKind != JsonValueKind.Object) throw new JsonException("text_config must be an object.");
        string modelType = "opt";
        if (element.TryGetProperty("model_type", out var mt))
            modelType = mt.ValueKind == JsonValueKind.String
                ? mt.GetString()!
                : throw new JsonException($"model_type must be a string such as \"opt\" or \"t5\", not {mt.GetRawText()}.");
        try
        {
            var type = LanguageModels.Find(modelType)?.ConfigType ?? typeof(UnsupportedTextConfig);
            return (TextConfig?)element.Deserialize(type, options);
        }
        catch (JsonException e)
        {
            // The nested document's own path ($.hidden_size); the serializer adds where the object sits.
            throw new JsonException($"at {e.Path} inside it: {e.Message.Split(" Path:")[0]}", e);
        }
    }

    public override void Write(Utf8JsonWriter writer, TextConfig value, JsonSerializerOptions options) =>
        JsonSerializer.Serialize(writer, value, value.GetType(), options);
}
