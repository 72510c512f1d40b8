using System.Text.Json.Nodes;
using Multimodal.Common;

namespace Multimodal.Loading;

/// <summary>Writes a folder that loads already quantized: the source folder's files (tokenizer, processor and generation
/// configs) copied, config.json with a <c>quantization_config</c>, and model.safetensors holding the model's state dict —
/// the integers and scales of the quantized layers, everything else as loaded. The next start maps that file instead of
/// quantizing again.</summary>
internal static class QuantizedCheckpoint
{
    // Weight files of the source: replaced by the one model.safetensors written here.
    private static bool IsWeights(string name) =>
        name.EndsWith(".safetensors", StringComparison.OrdinalIgnoreCase) || name.EndsWith(".bin", StringComparison.OrdinalIgnoreCase)
        || name.EndsWith(".pt", StringComparison.OrdinalIgnoreCase) || name.EndsWith(".index.json", StringComparison.OrdinalIgnoreCase);

    /// <param name="model">the loaded, quantized model.</param>
    /// <param name="tied">state-dict keys that repeat another tensor (left out, as <c>save_pretrained</c> does).</param>
    /// <param name="source">the folder the model was loaded from.</param>
    /// <param name="target">a folder that does not exist yet (or is empty); written in full or not at all.</param>
    /// <param name="quantization">what config.json records.</param>
    /// <exception cref="IOException">the target holds files already.</exception>
    public static void Write(nn.Module model, IEnumerable<string> tied, string source, string target, QuantizationConfig quantization)
    {
        source = Path.GetFullPath(source);
        target = Path.GetFullPath(target.TrimEnd(Path.DirectorySeparatorChar));
        if (Directory.Exists(target) && Directory.EnumerateFileSystemEntries(target).Any())
            throw new IOException($"'{target}' already holds files: a quantized copy is written to a new or empty folder.");
        string staging = target + ".partial-" + Guid.NewGuid().ToString("N")[..8];
        try
        {
            CopyFiles(source, staging);
            var config = JsonNode.Parse(File.ReadAllText(Path.Combine(source, "config.json")))!.AsObject();
            config["quantization_config"] = new JsonObject
            {
                ["quant_method"] = quantization.QuantMethod, ["bits"] = quantization.Bits, ["group_size"] = quantization.GroupSize,
            };
            File.WriteAllText(Path.Combine(staging, "config.json"), config.ToJsonString(new System.Text.Json.JsonSerializerOptions { WriteIndented = true }));
            var skip = tied.ToHashSet(StringComparer.Ordinal);
            // Tensors kept in floats are written in the dtype the source stored them in, scales in float32.
            var stored = StoredFloatType(source);
            using var scope = NewDisposeScope();
            var state = model.state_dict().Where(kv => !skip.Contains(kv.Key)).ToDictionary(kv => kv.Key,
                kv => stored is ScalarType t && kv.Value.is_floating_point() && !kv.Key.EndsWith(".weight_scale", StringComparison.Ordinal)
                    ? kv.Value.to(t) : kv.Value);
            SafetensorsWriter.Write(Path.Combine(staging, "model.safetensors"), state);
            if (Directory.Exists(target)) Directory.Delete(target);
            Directory.Move(staging, target);
        }
        catch
        {
            if (Directory.Exists(staging)) Directory.Delete(staging, recursive: true);
            throw;
        }
    }

    // The one floating dtype of the source's weights (a half-precision checkpoint stays half), or null when they mix.
    private static ScalarType? StoredFloatType(string source)
    {
        using var weights = CheckpointFolder.Open(source);
        var types = weights.Tensors.Values.Select(t => SafetensorsDType.IsKnown(t.DType) ? SafetensorsDType.ToTorch(t.DType) : null)
            .Where(t => t is ScalarType.Float16 or ScalarType.BFloat16 or ScalarType.Float32 or ScalarType.Float64).Distinct().ToList();
        return types.Count == 1 ? types[0] : null;
    }

    private static void CopyFiles(string from, string to)
    {
        Directory.CreateDirectory(to);
        foreach (var file in Directory.EnumerateFiles(from))
        {
            string name = Path.GetFileName(file);
            if (name != "config.json" && !IsWeights(name)) File.Copy(file, Path.Combine(to, name));
        }
        foreach (var dir in Directory.EnumerateDirectories(from))
            CopyFiles(dir, Path.Combine(to, Path.GetFileName(dir)));
    }
}
