using System.Text.Json;
using Multimodal.Common;

namespace Multimodal.Generation;

/// <summary>A checkpoint's generation defaults, transformers v4.45.1 <c>GenerationConfig</c> as read from
/// <c>generation_config.json</c>: only the keys the file sets (null = the file does not set it), which
/// <see cref="GenerationOptions.WithDefaults"/> applies wherever the caller set nothing.</summary>
public sealed record GenerationConfig
{
    /// <summary>The file name inside a checkpoint folder.</summary>
    public const string FileName = "generation_config.json";

    /// <summary><c>max_length</c>.</summary>
    public int? MaxLength { get; init; }

    /// <summary><c>max_new_tokens</c>.</summary>
    public int? MaxNewTokens { get; init; }

    /// <summary><c>min_length</c>.</summary>
    public int? MinLength { get; init; }

    /// <summary><c>min_new_tokens</c>.</summary>
    public int? MinNewTokens { get; init; }

    /// <summary><c>do_sample</c>.</summary>
    public bool? DoSample { get; init; }

    /// <summary><c>num_beams</c>.</summary>
    public int? NumBeams { get; init; }

    /// <summary><c>length_penalty</c>.</summary>
    public double? LengthPenalty { get; init; }

    /// <summary><c>early_stopping</c> (true, false or "never").</summary>
    public BeamEarlyStopping? EarlyStopping { get; init; }

    /// <summary><c>temperature</c>.</summary>
    public double? Temperature { get; init; }

    /// <summary><c>top_k</c>.</summary>
    public int? TopK { get; init; }

    /// <summary><c>top_p</c>.</summary>
    public double? TopP { get; init; }

    /// <summary><c>repetition_penalty</c>.</summary>
    public double? RepetitionPenalty { get; init; }

    /// <summary><c>eos_token_id</c>, one id or a list.</summary>
    public IReadOnlyList<long>? EosTokenIds { get; init; }

    /// <summary><c>pad_token_id</c>.</summary>
    public long? PadTokenId { get; init; }

    /// <summary><c>bos_token_id</c> (informational: BLIP-2 prepends <c>text_config.bos_token_id</c>, as upstream).</summary>
    public long? BosTokenId { get; init; }

    /// <summary><c>decoder_start_token_id</c> (informational: T5 starts from its config's, as upstream).</summary>
    public long? DecoderStartTokenId { get; init; }

    /// <summary>Reads <c>generation_config.json</c> from a checkpoint folder; null when the folder has none.</summary>
    /// <exception cref="ConfigException">the file is not valid JSON or a key has the wrong type or range.</exception>
    public static GenerationConfig? FromFolder(string folder)
    {
        string path = Path.Combine(folder, FileName);
        return File.Exists(path) ? Load(path) : null;
    }

    /// <summary>Reads a <c>generation_config.json</c> file.</summary>
    /// <exception cref="ConfigException">the file is not valid JSON or a key has the wrong type or range.</exception>
    public static GenerationConfig Load(string path)
    {
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(File.ReadAllText(path));
        }
        catch (JsonException e)
        {
            throw new ConfigException(path, $"invalid JSON: {e.Message}", e);
        }
        using (doc)
        {
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object) throw new ConfigException(path, "expected a JSON object.");
            var config = new GenerationConfig
            {
                MaxLength = Int(root, "max_length", path, 1),
                MaxNewTokens = Int(root, "max_new_tokens", path, 1),
                MinLength = Int(root, "min_length", path, 0),
                MinNewTokens = Int(root, "min_new_tokens", path, 0),
                DoSample = Bool(root, "do_sample", path),
                NumBeams = Int(root, "num_beams", path, 1),
                LengthPenalty = Number(root, "length_penalty", path),
                EarlyStopping = Early(root, path),
                Temperature = Number(root, "temperature", path),
                TopK = Int(root, "top_k", path, 0),
                TopP = Number(root, "top_p", path),
                RepetitionPenalty = Number(root, "repetition_penalty", path),
                EosTokenIds = Ids(root, "eos_token_id", path),
                PadTokenId = Id(root, "pad_token_id", path),
                BosTokenId = Id(root, "bos_token_id", path),
                DecoderStartTokenId = Id(root, "decoder_start_token_id", path),
            };
            // The same ranges GenerationOptions.Validate enforces, reported against the file. Combinations
            // (beam sampling) are judged when options are used: a caller may override one side.
            try
            {
                new GenerationOptions().WithDefaults(config).ValidateRanges();
            }
            catch (ArgumentException e)
            {
                throw new ConfigException(path, e.Message, e);
            }
            return config;
        }
    }

    private static JsonElement? Get(JsonElement root, string key) =>
        root.TryGetProperty(key, out var v) && v.ValueKind != JsonValueKind.Null ? v : null;

    private static int? Int(JsonElement root, string key, string path, int min)
    {
        if (Get(root, key) is not { } v) return null;
        if (v.ValueKind != JsonValueKind.Number || !v.TryGetInt32(out int n))
            throw new ConfigException(path, $"\"{key}\" must be an integer, not {v.GetRawText()}.");
        if (n < min) throw new ConfigException(path, $"\"{key}\" must be at least {min}, not {n}.");
        return n;
    }

    private static double? Number(JsonElement root, string key, string path)
    {
        if (Get(root, key) is not { } v) return null;
        if (v.ValueKind != JsonValueKind.Number) throw new ConfigException(path, $"\"{key}\" must be a number, not {v.GetRawText()}.");
        return v.GetDouble();
    }

    private static bool? Bool(JsonElement root, string key, string path)
    {
        if (Get(root, key) is not { } v) return null;
        return v.ValueKind switch
        {
            JsonValueKind.True => true,
            JsonValueKind.False => false,
            _ => throw new ConfigException(path, $"\"{key}\" must be true or false, not {v.GetRawText()}."),
        };
    }

    private static BeamEarlyStopping? Early(JsonElement root, string path)
    {
        if (Get(root, "early_stopping") is not { } v) return null;
        return v.ValueKind switch
        {
            JsonValueKind.True => BeamEarlyStopping.Immediate,
            JsonValueKind.False => BeamEarlyStopping.Heuristic,
            JsonValueKind.String when v.GetString() == "never" => BeamEarlyStopping.Never,
            _ => throw new ConfigException(path, $"\"early_stopping\" must be true, false or \"never\", not {v.GetRawText()}."),
        };
    }

    // One special id (pad, bos, decoder start): a list is an error, not silently ignored.
    private static long? Id(JsonElement root, string key, string path)
    {
        if (Get(root, key) is { ValueKind: JsonValueKind.Array } list)
            throw new ConfigException(path, $"\"{key}\" must be one integer id, not the list {list.GetRawText()}.");
        return Ids(root, key, path)?[0];
    }

    // Special ids: one integer, or (eos_token_id) a list of them. Negative ids (LLaMA's published pad -1)
    // mean "none", as transformers treats them when it builds its tensors.
    private static IReadOnlyList<long>? Ids(JsonElement root, string key, string path)
    {
        if (Get(root, key) is not { } v) return null;
        var items = v.ValueKind == JsonValueKind.Array ? v.EnumerateArray().ToList() : [v];
        var ids = new List<long>();
        foreach (var item in items)
        {
            if (item.ValueKind != JsonValueKind.Number || !item.TryGetInt64(out long id))
                throw new ConfigException(path, $"\"{key}\" must be an integer id or a list of them, not {v.GetRawText()}.");
            if (id >= 0) ids.Add(id);
        }
        return ids.Count == 0 ? null : ids;
    }
}
