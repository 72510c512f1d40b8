using System.Text.Json;

namespace Multimodal.Loading;

/// <summary>A published checkpoint folder as transformers' <c>save_pretrained</c> writes it:
/// <c>config.json</c> plus either <c>model.safetensors</c> or the shards named by
/// <c>model.safetensors.index.json</c>.</summary>
public sealed class CheckpointFolder : ITensorSource
{
    /// <summary>Name of the single-file weights.</summary>
    public const string SingleFile = "model.safetensors";

    /// <summary>Name of the shard index.</summary>
    public const string IndexFile = "model.safetensors.index.json";

    private readonly List<SafetensorsFile> _files;
    private readonly Dictionary<string, SafetensorsFile> _owner;

    /// <summary>The folder.</summary>
    public string Folder { get; }

    /// <summary>Path of <c>config.json</c>.</summary>
    public string ConfigPath => Path.Combine(Folder, "config.json");

    /// <inheritdoc/>
    public string Description => Folder;

    /// <inheritdoc/>
    public IReadOnlyDictionary<string, TensorInfo> Tensors { get; }

    private CheckpointFolder(string folder, List<SafetensorsFile> files, Dictionary<string, SafetensorsFile> owner)
    {
        Folder = folder;
        _files = files;
        _owner = owner;
        Tensors = owner.ToDictionary(kv => kv.Key, kv =>
        {
            var e = kv.Value.Entries[kv.Key];
            return new TensorInfo(e.Name, e.DType, e.Shape, Path.GetFileName(kv.Value.Path));
        });
    }

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

        string index = Path.Combine(folder, IndexFile);
        if (CheckpointFiles.EntryExists(index)) return OpenSharded(folder, index);
        string single = Path.Combine(folder, SingleFile);
        if (CheckpointFiles.EntryExists(single))
        {
            var file = SafetensorsFile.Open(single);
            return new CheckpointFolder(folder, [file], file.Entries.Keys.ToDictionary(k => k, _ => file));
        }
        string hint = Directory.EnumerateFiles(folder, "*.bin").Any() || Directory.EnumerateFiles(folder, "*.pt").Any()
            ? " It has PyTorch pickle weights only; download the safetensors files of the checkpoint instead."
            : "";
        throw new FileNotFoundException(
            $"Checkpoint folder '{folder}' has neither {SingleFile} nor {IndexFile}.{hint}", single);
    }

    private static CheckpointFolder OpenSharded(string folder, string indexPath)
    {
        Dictionary<string, string> weightMap;
        CheckpointFiles.RequireRegularFile(indexPath, minimumBytes: 2);
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllText(indexPath));
            if (!doc.RootElement.TryGetProperty("weight_map", out var map) || map.ValueKind != JsonValueKind.Object)
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

        var problems = new List<string>();
        var files = new List<SafetensorsFile>();
        var owner = new Dictionary<string, SafetensorsFile>(StringComparer.Ordinal);
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
                var shard = SafetensorsFile.Open(shardPath);
                files.Add(shard);
                foreach (var name in shard.Entries.Keys)
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
                if (!owner.ContainsKey(name) && files.Any(f => Path.GetFileName(f.Path) == shardName))
                    problems.Add($"{name}: the index names {shardName}, which does not contain it");
            if (problems.Count > 0) throw new CheckpointFormatException(indexPath, problems);
            return new CheckpointFolder(folder, files, owner);
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
    public void CopyTo(string name, Tensor destination)
    {
        var file = Owner(name);
        file.CopyTo(file.Entries[name], destination);
    }

    /// <inheritdoc/>
    public bool TryMapInto(string name, Tensor destination)
    {
        var file = Owner(name);
        return file.TryMapInto(file.Entries[name], destination);
    }

    private SafetensorsFile Owner(string name) =>
        _owner.TryGetValue(name, out var file)
            ? file
            : throw new KeyNotFoundException($"Checkpoint '{Folder}' has no tensor named '{name}'.");

    /// <inheritdoc/>
    public void Dispose()
    {
        foreach (var f in _files) f.Dispose();
    }
}
