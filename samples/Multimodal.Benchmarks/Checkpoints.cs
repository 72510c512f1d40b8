using System.Text.Json;
using System.Text.Json.Nodes;
using Multimodal.Blip2;
using Multimodal.Common;
using Multimodal.Loading;
using static TorchSharp.torch;

namespace Multimodal.Benchmarks;

/// <summary>Random-weight checkpoint folders in the hub's layout: config.json, shards of at most a given size and
/// model.safetensors.index.json, written with the library's safetensors writer.</summary>
internal static class Checkpoints
{
    /// <summary>Writes (or reuses, when its config matches) a folder for <paramref name="config"/>; returns its shard files.</summary>
    public static IReadOnlyList<string> Write(string folder, Blip2Config config, ScalarType dtype, long shardBytes)
    {
        string configJson = JsonSerializer.Serialize(config, PretrainedConfig.JsonOptions);
        string stamp = Path.Combine(folder, "benchmark-stamp.txt");
        string wanted = configJson + dtype;
        var index = Path.Combine(folder, CheckpointFolder.IndexFile);
        if (File.Exists(stamp) && File.ReadAllText(stamp) == wanted && File.Exists(index))
            return Shards(folder);
        if (Directory.Exists(folder)) Directory.Delete(folder, recursive: true);
        Directory.CreateDirectory(folder);
        File.WriteAllText(Path.Combine(folder, "config.json"), configJson);

        // Names and shapes from a model built on the meta device; the tied LM head is not stored (save_pretrained).
        List<(string Name, long[] Shape)> entries;
        using (var meta = new Blip2ForConditionalGeneration(config, META))
            entries = meta.state_dict().Where(kv => kv.Key != "language_model.lm_head.weight").Select(kv => (kv.Key, kv.Value.shape)).ToList();
        long elementBytes = dtype == ScalarType.Float32 ? 4 : 2;
        var groups = new List<List<(string Name, long[] Shape)>> { new() };
        long inShard = 0;
        foreach (var e in entries)
        {
            long bytes = e.Shape.Aggregate(1L, (a, b) => a * b) * elementBytes;
            if (inShard > 0 && inShard + bytes > shardBytes) { groups.Add([]); inShard = 0; }
            groups[^1].Add(e);
            inShard += bytes;
        }
        var weightMap = new SortedDictionary<string, string>(StringComparer.Ordinal);
        var generator = new Generator(seed: 0);
        for (int s = 0; s < groups.Count; s++)
        {
            string shard = $"model-{s + 1:D5}-of-{groups.Count:D5}.safetensors";
            using var scope = NewDisposeScope();
            // Small random values: norms and biases near their trained ranges keep activations finite.
            var tensors = groups[s].Select(e => new KeyValuePair<string, Tensor>(e.Name,
                (e.Name.EndsWith("layernorm.weight") || e.Name.EndsWith("layer_norm.weight") || e.Name.EndsWith("LayerNorm.weight")
                    ? ones(e.Shape) : randn(e.Shape, generator: generator).mul_(0.02)).to(dtype))).ToList();
            SafetensorsWriter.Write(Path.Combine(folder, shard), tensors);
            foreach (var (name, _) in groups[s]) weightMap[name] = shard;
            Console.WriteLine($"  wrote {shard} ({groups[s].Count} tensors)");
        }
        File.WriteAllText(index, JsonSerializer.Serialize(new { metadata = new { }, weight_map = weightMap }));
        WriteProcessorFiles(folder, config.VisionConfig.ImageSize);
        File.WriteAllText(stamp, wanted);
        return Shards(folder);
    }

    /// <summary>OPT's real tokenizer (from the repository's models/blip2-opt-tiny-random) and BLIP's image
    /// preprocessing at the model's resolution, so the folder also loads as a <c>Blip2Captioner</c>.</summary>
    private static void WriteProcessorFiles(string folder, int imageSize)
    {
        string tokenizer = Path.Combine(RepositoryRoot(), "models", "blip2-opt-tiny-random");
        foreach (var name in new[] { "vocab.json", "merges.txt", "added_tokens.json", "special_tokens_map.json", "tokenizer_config.json", "generation_config.json" })
            File.Copy(Path.Combine(tokenizer, name), Path.Combine(folder, name), overwrite: true);
        var preprocessor = JsonNode.Parse(File.ReadAllText(Path.Combine(tokenizer, "preprocessor_config.json")))!;
        preprocessor["size"] = new JsonObject { ["height"] = imageSize, ["width"] = imageSize };
        File.WriteAllText(Path.Combine(folder, "preprocessor_config.json"), preprocessor.ToJsonString());
    }

    /// <summary>The repository this benchmark runs from (the folder above holding models/).</summary>
    public static string RepositoryRoot()
    {
        foreach (var start in new[] { Directory.GetCurrentDirectory(), AppContext.BaseDirectory })
            for (var dir = new DirectoryInfo(start); dir is not null; dir = dir.Parent)
                if (Directory.Exists(Path.Combine(dir.FullName, "models", "blip2-opt-tiny-random"))) return dir.FullName;
        throw new DirectoryNotFoundException("Run the benchmark from the repository: it borrows models/blip2-opt-tiny-random's tokenizer.");
    }

    private static IReadOnlyList<string> Shards(string folder) =>
        Directory.GetFiles(folder, "*.safetensors").Order(StringComparer.Ordinal).ToList();
}
