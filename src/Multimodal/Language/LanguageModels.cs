namespace Multimodal.Language;

/// <summary>The language models this library implements, by <c>model_type</c> (transformers' <c>CONFIG_MAPPING</c> and
/// <c>MODEL_FOR_CAUSAL_LM_MAPPING</c> in one table). The only place that lists them.</summary>
internal static class LanguageModels
{
    private static readonly LanguageModelDescriptor[] All =
    [
        new Opt.OptDescriptor(),
        new T5.T5Descriptor(),
        new Llama.LlamaDescriptor(),
        new Mpt.MptDescriptor(),
        new Mpt.MosaicGptDescriptor(),
        new GptNeoX.GptNeoXDescriptor(),
    ];

    private static readonly Dictionary<string, LanguageModelDescriptor> ByModelType = All.ToDictionary(d => d.ModelType, StringComparer.Ordinal);

    /// <summary>The <c>model_type</c>s implemented, for messages.</summary>
    public static IEnumerable<string> ModelTypes => All.Select(d => d.ModelType);

    /// <summary>The entry for <paramref name="modelType"/>, or null.</summary>
    public static LanguageModelDescriptor? Find(string? modelType) =>
        modelType is not null && ByModelType.TryGetValue(modelType, out var d) ? d : null;

    /// <summary>The entry for <paramref name="config"/>'s <c>model_type</c>, or null when none is implemented.</summary>
    public static LanguageModelDescriptor? TryFor(TextConfig config) => Find(config.ModelType) is { } d && d.ConfigType == config.GetType() ? d : null;

    /// <summary>Upstream's default config of <paramref name="modelType"/> (what a wrapper config holds when its file has no
    /// <c>text_config</c>).</summary>
    public static TextConfig DefaultConfig(string modelType) =>
        (TextConfig)Activator.CreateInstance(Find(modelType)?.ConfigType ?? throw new ArgumentException($"model_type \"{modelType}\" is not implemented."))!;

    /// <summary>The entry for <paramref name="config"/>'s <c>model_type</c>.</summary>
    /// <exception cref="NotSupportedException">no language model of that type is implemented.</exception>
    public static LanguageModelDescriptor For(TextConfig config) => TryFor(config)
        ?? throw new NotSupportedException(
            $"Language model type \"{config.ModelType}\" is not implemented; supported: {string.Join(", ", ModelTypes)}.");
}
