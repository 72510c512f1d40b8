namespace Multimodal.Loading;

/// <summary>One input of a <see cref="MergedTensorSource"/>: a source and how its names map onto model
/// keys (null: a known tensor the model does not use, left out).</summary>
/// <param name="Name">a short name for messages ("vision encoder", "language model", "adapter").</param>
/// <param name="Source">the tensors.</param>
/// <param name="Map">published name → model key, or null to leave the tensor out.</param>
public sealed record TensorSourcePart(string Name, ITensorSource Source, Func<string, string?> Map);

/// <summary>Several sources seen as one, each tensor under its model key. A key provided by two sources is
/// a conflict, listed with both origins, unless it is in <c>superseded</c>: then the part
/// named there wins (OpenFlamingo's adapter checkpoint holds the trained, resized embeddings that replace
/// the language model's, as upstream's load order makes them).</summary>
public sealed class MergedTensorSource : ITensorSource
{
    private readonly Dictionary<string, (ITensorSource Source, string Name)> _owner = new(StringComparer.Ordinal);
    private readonly IReadOnlyList<TensorSourcePart> _parts;
    private readonly Func<string, (string Part, string Published)?>? _locate;

    /// <inheritdoc/>
    public string Description { get; }

    /// <inheritdoc/>
    public IReadOnlyDictionary<string, TensorInfo> Tensors { get; }

    /// <summary>Merges the parts.</summary>
    /// <param name="parts">the sources and their name maps.</param>
    /// <param name="superseded">model key → the part whose copy wins when two provide it.</param>
    /// <param name="locate">model key → the part that publishes it and its name there (the maps' inverse), so a
    /// missing key is reported by the name a user finds in that part's files.</param>
    /// <exception cref="CheckpointFormatException">two parts provide the same key.</exception>
    public MergedTensorSource(IReadOnlyList<TensorSourcePart> parts, IReadOnlyDictionary<string, string>? superseded = null,
        Func<string, (string Part, string Published)?>? locate = null)
    {
        _parts = parts;
        _locate = locate;
        Description = string.Join(" + ", parts.Select(p => $"{p.Name} ({p.Source.Description})"));
        var infos = new Dictionary<string, TensorInfo>(StringComparer.Ordinal);
        var partOf = new Dictionary<string, string>(StringComparer.Ordinal);
        var conflicts = new List<string>();
        foreach (var part in parts)
            foreach (var (name, info) in part.Source.Tensors)
            {
                if (part.Map(name) is not string key) continue;
                if (partOf.TryGetValue(key, out var other))
                {
                    if (superseded?.TryGetValue(key, out var winner) == true && (winner == part.Name || winner == other))
                    {
                        if (winner == other) continue;
                    }
                    else
                    {
                        conflicts.Add($"{key}: provided by both {other} and {part.Name}");
                        continue;
                    }
                }
                partOf[key] = part.Name;
                _owner[key] = (part.Source, name);
                infos[key] = info with { Name = key, Origin = $"{part.Name}: {info.Origin}" };
            }
        if (conflicts.Count > 0)
        {
            Dispose();
            throw new CheckpointFormatException(Description, conflicts);
        }
        Tensors = infos;
    }

    /// <inheritdoc/>
    public Tensor Read(string name) => _owner[name].Source.Read(_owner[name].Name);

    /// <inheritdoc/>
    public void CopyTo(string name, Tensor destination) => _owner[name].Source.CopyTo(_owner[name].Name, destination);

    /// <inheritdoc/>
    public bool TryMapInto(string name, Tensor destination) => _owner[name].Source.TryMapInto(_owner[name].Name, destination);

    /// <inheritdoc/>
    public string? Expected(string key) =>
        _locate?.Invoke(key) is var (part, published) && _parts.FirstOrDefault(p => p.Name == part) is { } found
            ? $"{published} in the {part} ({found.Source.Description})"
            : null;

    /// <inheritdoc/>
    public void Dispose()
    {
        foreach (var part in _parts) part.Source.Dispose();
    }
}
