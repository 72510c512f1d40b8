using System.Text.Json;
using System.Text.Json.Serialization;

namespace Multimodal.Common;

/// <summary>The attributes every transformers <c>PretrainedConfig</c> carries, and the binding rules
/// shared by all configs: snake_case JSON names, upstream defaults as initializers, unknown keys kept.</summary>
/// <remarks>Published <c>config.json</c> files are a diff against the class defaults, so a record's
/// property initializers must equal upstream's defaults. Keys no record binds land in
/// <see cref="Unbound"/> rather than being dropped.</remarks>
public abstract record PretrainedConfig
{
    /// <summary><c>_name_or_path</c>.</summary>
    [JsonPropertyName("_name_or_path")] public string NameOrPath { get; init; } = "";

    /// <summary>Upstream class names the checkpoint was saved from.</summary>
    public IReadOnlyList<string>? Architectures { get; init; }

    /// <summary>dtype the checkpoint was saved in ("float32", "float16", "bfloat16").</summary>
    public string? TorchDtype { get; init; }

    /// <summary>transformers version that wrote the file.</summary>
    public string? TransformersVersion { get; init; }

    /// <summary><c>quantization_config</c>: set in a folder saved quantized (see <see cref="Common.QuantizationConfig"/>).</summary>
    public QuantizationConfig? QuantizationConfig { get; init; }

    /// <summary>Keys of the JSON object that no property binds.</summary>
    [JsonExtensionData] public Dictionary<string, JsonElement>? Unbound { get; init; }

    /// <summary>Nested configs, for <see cref="UnboundKeys"/>.</summary>
    protected virtual IEnumerable<(string Prefix, PretrainedConfig Config)> Children => [];

    /// <summary>Every unbound key of this config and its nested configs, dotted
    /// (<c>text_config.foo</c>), excluding <see cref="GenericKeys"/>.</summary>
    public IEnumerable<string> UnboundKeys() =>
        (Unbound?.Keys ?? Enumerable.Empty<string>()).Where(k => !GenericKeys.Contains(k))
        .Concat(Children.SelectMany(c => c.Config.UnboundKeys().Select(k => c.Prefix + "." + k)));

    /// <summary><c>PretrainedConfig</c> attributes that do not change what a model computes: training
    /// and output flags, task labels, and the legacy generation defaults (generation reads
    /// <c>generation_config.json</c>).</summary>
    public static readonly IReadOnlySet<string> GenericKeys = new HashSet<string>
    {
        "add_cross_attention", "bad_words_ids", "begin_suppress_tokens", "bos_token_id", "chunk_size_feed_forward",
        "cross_attention_hidden_size", "decoder_start_token_id", "diversity_penalty", "do_sample", "early_stopping",
        "encoder_no_repeat_ngram_size", "eos_token_id", "exponential_decay_length_penalty", "finetuning_task",
        "forced_bos_token_id", "forced_eos_token_id", "id2label", "is_decoder", "is_encoder_decoder", "label2id",
        "length_penalty", "max_length", "min_length", "no_repeat_ngram_size", "num_beam_groups", "num_beams",
        "num_return_sequences", "output_attentions", "output_hidden_states", "output_scores", "pad_token_id",
        "prefix", "problem_type", "pruned_heads", "remove_invalid_values", "repetition_penalty", "return_dict",
        "return_dict_in_generate", "sep_token_id", "suppress_tokens", "task_specific_params", "temperature",
        "tf_legacy_loss", "tie_encoder_decoder", "tie_word_embeddings", "tokenizer_class", "top_k", "top_p",
        "torchscript", "typical_p", "use_bfloat16", "use_cache",
    };

    /// <summary>Refuses a checkpoint whose <c>architectures</c> names another class than the one loading it
    /// (a retrieval checkpoint opened for captioning, an InstructBLIP folder opened as BLIP-2): the strict
    /// loader would fail too, but with a list of tensors instead of the reason. A file without the key passes.</summary>
    /// <param name="path">the config file, named in the error.</param>
    /// <param name="loading">the class doing the loading, named in the error.</param>
    /// <param name="accepted">upstream class names this class loads.</param>
    /// <exception cref="ConfigException">the file names only other classes.</exception>
    public void RequireArchitecture(string path, string loading, params string[] accepted)
    {
        if (Architectures is not { Count: > 0 } names || names.Any(accepted.Contains)) return;
        throw new ConfigException(path,
            $"\"architectures\" is [{string.Join(", ", names)}], but the checkpoint is being loaded as {loading}, which takes " +
            $"{string.Join(" or ", accepted)}; use the class made for {names[0]}.");
    }

    /// <summary>Serializer options for upstream config files.</summary>
    public static readonly JsonSerializerOptions JsonOptions = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
        WriteIndented = true,
    };

    /// <summary>The <c>model_type</c> of a config file (null when it has none), to pick the family before reading it whole.</summary>
    /// <exception cref="ConfigException">the file is not a JSON object, or model_type is not a string.</exception>
    public static string? ReadModelType(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"Config file '{path}' does not exist.", path);
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllText(path));
            if (doc.RootElement.ValueKind != JsonValueKind.Object) throw new ConfigException(path, "the file is not a JSON object.");
            if (!doc.RootElement.TryGetProperty("model_type", out var type) || type.ValueKind == JsonValueKind.Null) return null;
            return type.ValueKind == JsonValueKind.String ? type.GetString()
                : throw new ConfigException(path, $"model_type must be a string, not {type.GetRawText()}.");
        }
        catch (JsonException e)
        {
            throw new ConfigException(path, $"invalid JSON: {e.Message}", e);
        }
    }

    /// <summary>Reads a config file, turning JSON errors into <see cref="ConfigException"/>s that name the file and key.</summary>
    public static T Read<T>(string path) where T : PretrainedConfig
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"Config file '{path}' does not exist.", path);
        try
        {
            return JsonSerializer.Deserialize<T>(File.ReadAllText(path), JsonOptions)
                   ?? throw new ConfigException(path, "the file holds JSON null, not an object.");
        }
        catch (JsonException e)
        {
            string where = string.IsNullOrEmpty(e.Path) || e.Path == "$" ? "" : $" at {e.Path}";
            throw new ConfigException(path, $"invalid JSON{where}: {e.Message}", e);
        }
        catch (NotSupportedException e)
        {
            throw new ConfigException(path, e.Message, e);
        }
    }
}

/// <summary>A config file is malformed or describes something unsupported.</summary>
public sealed class ConfigException : Exception
{
    /// <summary>The config file.</summary>
    public string ConfigPath { get; }

    /// <summary>Creates the exception.</summary>
    public ConfigException(string path, string problem, Exception? inner = null)
        : base($"Config '{path}': {problem}", inner) => ConfigPath = path;
}
