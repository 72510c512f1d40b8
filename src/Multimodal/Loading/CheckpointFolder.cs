using System.Text.Json;

namespace Multimodal.Loading;

/// <summary>A published checkpoint folder as transformers' <c>save_pretrained</c> writes it: <c>config.json</c> plus
/// weights, looked for in transformers' order: <c>model.safetensors</c>, the shards named by
/// <c>model.safetensors.index.json</c>, <c>pytorch_model.bin</c>, the shards named by
/// <c>pytorch_model.bin.index.json</c>. Pickle weights go through <see cref="TorchCheckpointFile"/>, which executes
/// nothing.</summary>
public sealed class CheckpointFolder : ITensorSource
{
    /// <summary>Name of the single-file weights.</summary>
    public const string SingleFile = "model.safetensors";

    /// <summary>Name of the shard index.</summary>
    public const string IndexFile = "model.safetensors.index.json";

    /// <summary>Name of the single-file pickle weights older checkpoints ship.</summary>
    public const string PickleFile = "pytorch_model.bin";

    /// <summary>Name of the pickle shards' index.</summary>
    public const string PickleIndexFile = "pytorch_model.bin.index.json";

    private readonly List<ITensorSource> _files;
    private readonly Dictionary<string, ITensorSource> _owner;

    /// <summary>The folder.</summary>
    public string Folder { get; }

    /// <summary>Path of <c>config.json</c>.</summary>
    public string ConfigPath => Path.Combine(Folder, "config.json");

    /// <inheritdoc/>
    /// <remarks>The weight file, or the index of the shards, so a message names what a user opens.</remarks>
    public string Description { get; }

    /// <inheritdoc/>
    public IReadOnlyDictionary<string, TensorInfo> Tensors { get; }

    private CheckpointFolder(string folder, string weights, List<ITensorSource> files, Dictionary<string, ITensorSource> owner)
    {
        Folder = folder;
        Description = weights;
        _files = files;
        _owner = owner;
        Tensors = owner.ToDictionary(kv => kv.Key, kv => kv.Value.Tensors[kv.Key]);
    }

    /// <summary>Whether <paramref name="folder"/> holds transformers weights of any kind this class reads.</summary>
    public static bool HasWeights(string folder) =>
        new[] { SingleFile, IndexFile, PickleFile, PickleIndexFile }.Any(f => CheckpointFiles.EntryExists(Path.Combine(folder, f)));

    /// <summary>Opens a checkpoint folder and validates every weight file's header.</summary>
    /// <exception cref="DirectoryNotFoundException">the folder does not exist.</exception>
    /// <exception cref="FileNotFoundException">config.json or the weights are missing.</exception>
    /// <exception cref="CheckpointException">a weight file or the index is malformed.</exception>
    public static CheckpointFolder Open(string folder)
    {
        folder = Path.GetFullPath(folder);
        if (!Directory.Exists(folder))
            throw new DirectoryNotFoundException($"Checkpoint folder '{folder}' does not exist.");
        if (!File.Exists(Path.Combine(folder, "config.json")))
            throw new FileNotFoundException($"Checkpoint folder '{folder}' has no config.json.", Path.Combine(folder, "config.json"));

        foreach (var (name, sharded, open) in new (string, bool, Func<string, ITensorSource>)[]
                 {
                     (SingleFile, false, p => new SingleSafetensors(p)), (IndexFile, true, p => new SingleSafetensors(p)),
                     (PickleFile, false, TorchCheckpointFile.Open), (PickleIndexFile, true, TorchCheckpointFile.Open),
                 })
        {
            string path = Path.Combine(folder, name);
            if (!CheckpointFiles.EntryExists(path)) continue;
            if (sharded) return OpenSharded(folder, path, open);
            var file = open(path);
            return new CheckpointFolder(folder, path, [file], file.Tensors.Keys.ToDictionary(k => k, _ => file));
        }
        string hint = Directory.EnumerateFiles(folder, "*.pt").Any() || Directory.EnumerateFiles(folder, "*.bin").Any()
            ? " It has other PyTorch files only: transformers names its weights pytorch_model.bin or model.safetensors."
            : "";
        throw new FileNotFoundException(
            $"Checkpoint folder '{folder}' has none of {SingleFile}, {IndexFile}, {PickleFile} or {PickleIndexFile}.{hint}", Path.Combine(folder, SingleFile));
    }

    private static CheckpointFolder OpenSharded(string folder, string indexPath, Func<string, ITensorSource> open)
    {
        Dictionary<string, string> weightMap;
        CheckpointFiles.RequireRegularFile(indexPath, minimumBytes: 2);
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllText(indexPath));
            if (doc.RootElement.ValueKind != JsonValueKind.Object || !doc.RootElement.TryGetProperty("weight_map", out var map)
                || map.ValueKind != JsonValueKind.Object)
                throw new CheckpointFormatException(indexPath, "it has no \"weight_map\" object.");
            weightMap = map.EnumerateObject().ToDictionary(p => p.Name,
                p => p.Value.ValueKind == JsonValueKind.String
                    ? p.Value.GetString()!
                    : throw new CheckpointFormatException(indexPath, $"weight_map[\"{p.Name}\"] is not a file name."));
        }
        catch (JsonException e)
        {
            throw new CheckpointFormatException(indexPath, $"it is not valid JSON: {e.Message}");
        }
        if (weightMap.Count == 0)
            throw new CheckpointFormatException(indexPath, "its \"weight_map\" is empty: it lists no tensor and no shard.");

        var problems = new List<string>();
        var files = new List<ITensorSource>();
        var owner = new Dictionary<string, ITensorSource>(StringComparer.Ordinal);
        try
        {
            foreach (var shardName in weightMap.Values.Distinct().Order(StringComparer.Ordinal))
            {
                string shardPath = Path.Combine(folder, shardName);
                if (Path.GetDirectoryName(Path.GetFullPath(shardPath)) != folder)
                {
                    problems.Add($"shard \"{shardName}\" is not a file name inside the folder");
                    continue;
                }
                if (!CheckpointFiles.EntryExists(shardPath))
                {
                    problems.Add($"shard {shardName} is listed but does not exist");
                    continue;
                }
                var shard = open(shardPath);
                files.Add(shard);
                foreach (var name in shard.Tensors.Keys)
                {
                    if (!weightMap.TryGetValue(name, out var listed))
                        problems.Add($"{name}: stored in {shardName} but not listed in the index");
                    else if (listed != shardName)
                        problems.Add($"{name}: stored in {shardName} but the index names {listed}");
                    else
                        owner[name] = shard;
                }
            }
            foreach (var (name, shardName) in weightMap)
                if (!owner.ContainsKey(name) && files.Any(f => Path.GetFileName(f.Description) == shardName))
                    problems.Add($"{name}: the index names {shardName}, which does not contain it");
            if (problems.Count > 0) throw new CheckpointFormatException(indexPath, problems);
            return new CheckpointFolder(folder, indexPath, files, owner);
        }
        catch
        {
            foreach (var f in files) f.Dispose();
            throw;
        }
    }

    /// <inheritdoc/>
    public Tensor Read(string name) => Owner(name).Read(name);

    /// <inheritdoc/>
    public void CopyTo(string name, Tensor destination) => Owner(name).CopyTo(name, destination);

    /// <inheritdoc/>
    public bool TryMapInto(string name, Tensor destination) => Owner(name).TryMapInto(name, destination);

    private ITensorSource Owner(string name) =>
        _owner.TryGetValue(name, out var file)
            ? file
            : throw new KeyNotFoundException($"Checkpoint '{Folder}' has no tensor named '{name}'.");

    /// <inheritdoc/>
    public void Dispose()
    {
        foreach (var f in _files) f.Dispose();
    }
}
