using Multimodal.Common;

namespace Multimodal.Loading;

/// <summary>Progress of a checkpoint load, reported after each tensor.</summary>
/// <param name="Tensor">the tensor just loaded.</param>
/// <param name="Loaded">tensors loaded so far.</param>
/// <param name="Total">tensors to load.</param>
/// <param name="BytesLoaded">bytes read so far.</param>
/// <param name="TotalBytes">bytes to read.</param>
public readonly record struct LoadProgress(string Tensor, int Loaded, int Total, long BytesLoaded, long TotalBytes);

/// <summary>Strict loading of named tensors into a module's state: every parameter and persistent
/// buffer must come from exactly one stored tensor, every stored tensor must be consumed or on the
/// family's allowlist, and shapes and dtypes are checked before any copy (<c>copy_</c> broadcasts and
/// converts silently). All problems are reported together in one
/// <see cref="CheckpointMismatchException"/>.</summary>
/// <remarks>A parameter on the CPU in its stored dtype takes the stored bytes in place (a copy-on-write mapping of
/// the file: nothing is allocated or copied). Any other is streamed into the module's (already allocated, untouched)
/// parameter, which lives in the target dtype on the target device, in chunks of <see cref="SafetensorsFile.ChunkBytes"/>:
/// peak memory is the model plus one staging chunk when converting, whatever the largest tensor.</remarks>
public static class StateDictLoader
{
    private abstract record Plan(long[] Shape);
    private sealed record Direct(string Published, long[] Shape) : Plan(Shape);
    private sealed record Composite(CompositeRule Rule, string[] Published, long[] Shape) : Plan(Shape);

    /// <summary><see cref="Load"/> into a freshly built model, which is disposed when loading fails, so a failed
    /// load leaves nothing allocated; returns the model.</summary>
    /// <exception cref="CheckpointMismatchException">names, shapes or dtypes do not match.</exception>
    public static TModule LoadInto<TModule>(TModule module, ITensorSource source, WeightMap map, string modelName,
        IProgress<LoadProgress>? progress = null) where TModule : nn.Module
    {
        return Ownership.DisposeOnFailure(module, m =>
        {
            Load(m, source, map, modelName, progress);
            return m;
        });
    }

    /// <summary>Builds the model on the meta device (no memory) and checks every name, shape and dtype against the
    /// weight headers; only when they all match is it built on <paramref name="device"/> and loaded. A config
    /// whose sizes do not fit the weights fails here, listing the tensors, before anything is allocated. Quantized
    /// layers (see <see cref="QuantizedLinear"/>) whose checkpoint holds floats are quantized as they load.</summary>
    /// <exception cref="CheckpointMismatchException">names, shapes or dtypes do not match.</exception>
    public static TModule BuildAndLoad<TModule>(Func<Device?, TModule> build, Device? device, ITensorSource source, WeightMap map,
        string modelName, IProgress<LoadProgress>? progress = null) where TModule : nn.Module
    {
        QuantizingSource? quantizing;
        using (var probe = build(META))
        {
            var targets = probe.state_dict();
            quantizing = QuantizingSource.For(targets, source, map);
            MakePlans(targets, quantizing ?? source, map, modelName);
        }
        using (quantizing) return LoadInto(build(device), quantizing ?? source, map, modelName, progress);
    }

    /// <summary>Loads <paramref name="source"/> into <paramref name="module"/> through <paramref name="map"/>.</summary>
    /// <exception cref="CheckpointMismatchException">names, shapes or dtypes do not match.</exception>
    public static void Load(nn.Module module, ITensorSource source, WeightMap map, string modelName,
        IProgress<LoadProgress>? progress = null)
    {
        var targets = module.state_dict();
        var plans = MakePlans(targets, source, map, modelName);
        long totalBytes = plans.Values.Sum(p => PlanBytes(p, source));
        long bytesLoaded = 0;
        int loaded = 0;
        using var noGrad = torch.no_grad();
        foreach (var (key, plan) in plans)
        {
            var target = targets[key];
            switch (plan)
            {
                case Direct direct:
                    if (!source.TryMapInto(direct.Published, target)) source.CopyTo(direct.Published, target);
                    break;
                case Composite composite:
                    using (var scope = NewDisposeScope())
                    {
                        var parts = composite.Published.Select(source.Read).ToList();
                        target.copy_(composite.Rule.Combine(parts));
                    }
                    break;
            }
            bytesLoaded += PlanBytes(plan, source);
            progress?.Report(new LoadProgress(key, ++loaded, plans.Count, bytesLoaded, totalBytes));
        }
    }

    /// <summary>Which stored tensor(s) fill each target; every problem found is thrown at once.</summary>
    private static Dictionary<string, Plan> MakePlans(IDictionary<string, Tensor> targets, ITensorSource source, WeightMap map, string modelName)
    {
        var plans = new Dictionary<string, Plan>(StringComparer.Ordinal);
        var consumed = new HashSet<string>(StringComparer.Ordinal);
        var mismatched = new List<string>();

        foreach (var (name, info) in source.Tensors)
        {
            string key = map.ToModelKey(name);
            if (!targets.ContainsKey(key)) continue;
            consumed.Add(name);
            if (map.Tied.TryGetValue(key, out var tiedTo))
            {
                // A published duplicate of a tied weight (e.g. an extra lm_head.weight): tie, don't copy.
                if (!info.Shape.SequenceEqual(targets[key].shape))
                    mismatched.Add($"{name}: tied to {tiedTo} with shape {Common.Shape.Format(targets[key].shape)}, but {info.Origin} has {Common.Shape.Format(info.Shape)}");
                continue;
            }
            if (plans.TryGetValue(key, out var existing) && existing is Direct d)
                mismatched.Add($"{key}: provided twice, by {d.Published} and {name}");
            else
                plans[key] = new Direct(name, info.Shape);
        }

        foreach (var rule in map.Composites)
        {
            var regex = WeightMap.ToRegex(rule.ModelPattern);
            foreach (var key in targets.Keys)
            {
                var match = regex.Match(key);
                if (!match.Success || plans.ContainsKey(key)) continue;
                var parts = rule.PublishedPatterns.Select(p => WeightMap.Substitute(p, match)).ToArray();
                if (!parts.All(source.Tensors.ContainsKey)) continue;
                plans[key] = new Composite(rule, parts, rule.Shape(parts.Select(p => source.Tensors[p].Shape).ToList()));
                consumed.UnionWith(parts);
            }
        }

        var missing = targets.Keys
            .Where(k => !plans.ContainsKey(k) && !map.Tied.ContainsKey(k))
            .Select(k => $"{k} {Common.Shape.Format(targets[k].shape)}" + (source.Expected(k) is string where
                ? $": expected as {where}"
                : map.ToPublishedKey(k) is var published && published != k ? $": expected as {published}" : ""))
            .ToList();
        var ignoredRegexes = map.Ignored.Select(i => WeightMap.ToRegex(i.Pattern)).ToList();
        var unexpected = source.Tensors.Values
            .Where(t => !consumed.Contains(t.Name) && !ignoredRegexes.Any(r => r.IsMatch(t.Name)))
            .Select(t => $"{t.Name} {Common.Shape.Format(t.Shape)} (in {t.Origin})")
            .ToList();
        foreach (var (key, plan) in plans)
        {
            var target = targets[key];
            string origin = plan switch
            {
                Direct direct => $"{source.Tensors[direct.Published].Origin} has {direct.Published}",
                Composite c => $"{string.Join(" + ", c.Published)} give",
                _ => "",
            };
            if (!plan.Shape.SequenceEqual(target.shape))
            {
                mismatched.Add($"{key}: model expects {Common.Shape.Format(target.shape)}, {origin} {Common.Shape.Format(plan.Shape)}");
                continue;
            }
            var storedTypes = plan switch
            {
                Direct direct => [source.Tensors[direct.Published].DType],
                Composite c => c.Published.Select(p => source.Tensors[p].DType).ToArray(),
                _ => Array.Empty<string>(),
            };
            foreach (var dtype in storedTypes)
                if (!Compatible(dtype, target.dtype))
                    mismatched.Add($"{key}: model holds {target.dtype}, {origin} dtype {dtype}");
        }
        if (missing.Count + unexpected.Count + mismatched.Count > 0)
            throw new CheckpointMismatchException(source.Description, modelName, missing, unexpected, mismatched);
        return plans;
    }

    private static long PlanBytes(Plan plan, ITensorSource source)
    {
        static long Bytes(TensorInfo t) => t.Shape.Aggregate(1L, (a, b) => a * b) * SafetensorsDType.SizeOf(t.DType);
        return plan switch
        {
            Direct d => Bytes(source.Tensors[d.Published]),
            Composite c => c.Published.Sum(p => Bytes(source.Tensors[p])),
            _ => 0,
        };
    }

    // Floats load into any float dtype (the checkpoint may be bf16 and the model fp32); integers and
    // booleans only into their own kind.
    private static bool Compatible(string stored, ScalarType target)
    {
        var storedType = SafetensorsDType.ToTorch(stored);
        if (storedType is null) return false;
        return IsFloat(storedType.Value) == IsFloat(target) && (IsFloat(target) || storedType.Value == target);
    }

    private static bool IsFloat(ScalarType t) =>
        t is ScalarType.Float16 or ScalarType.BFloat16 or ScalarType.Float32 or ScalarType.Float64;
}
