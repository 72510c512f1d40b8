using Multimodal.Loading;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace Multimodal.Tests.TestSupport;

/// <summary>The structure check every parity family shares: a model's state_dict() names and shapes equal
/// the published file's header plus the keys the manifest says the file omits (tied duplicates).</summary>
public static class StructureAssert
{
    /// <param name="map">the family's key map, when its published names differ from the module's: the file's
    /// keys go through its renames and composites (several published tensors → one model key) first.</param>
    public static void StateDictEqualsFile(nn.Module model, FixtureCase fixture, ITestOutputHelper output,
        string file = "model.safetensors", WeightMap? map = null)
    {
        var ours = model.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.shape);
        using var weights = SafetensorsFile.Open(Path.Combine(fixture.Path, file));
        var published = weights.Entries.ToDictionary(kv => kv.Key, kv => kv.Value.Shape);
        var expected = new Dictionary<string, long[]>();
        int composed = 0;
        foreach (var rule in map?.Composites ?? [])
        {
            var regex = WeightMap.ToRegex(rule.ModelPattern);
            foreach (var key in ours.Keys)
            {
                var match = regex.Match(key);
                if (!match.Success) continue;
                var parts = rule.PublishedPatterns.Select(p => WeightMap.Substitute(p, match)).ToList();
                Assert.True(parts.All(published.ContainsKey), $"{key}: the file lacks one of {string.Join(", ", parts)}");
                expected[key] = rule.Shape(parts.Select(p => published[p]).ToList());
                foreach (var part in parts) published.Remove(part);
                composed++;
            }
        }
        foreach (var (name, shape) in published)
            Assert.True(expected.TryAdd(map?.ToModelKey(name) ?? name, shape), $"two published keys map onto {map?.ToModelKey(name)}");
        foreach (var tied in fixture.KeysNotInFile) expected.Add(tied, ours.GetValueOrDefault(tied) ?? []);
        Assert.Equal(expected.Keys.Order(StringComparer.Ordinal).ToList(), ours.Keys.Order(StringComparer.Ordinal).ToList());
        foreach (var (name, shape) in expected)
            Assert.True(shape.SequenceEqual(ours[name]), $"{name}: ours {string.Join("x", ours[name])}, file {string.Join("x", shape)}");
        output.WriteLine($"case {fixture.Id}: {ours.Count} state_dict keys = {weights.Entries.Count} in {file} + {fixture.KeysNotInFile.Count} tied"
            + (map is null ? "" : $" (through the key map: {composed} keys composed of several published tensors)"));
    }

    /// <summary>Every forward tensor the manifest lists is produced and matches the reference (the loop each family's
    /// forward test shares; a listed tensor the model does not produce fails the case).</summary>
    public static void ForwardTensorsMatch(FixtureCase fixture, SafetensorsFile reference, IReadOnlyDictionary<string, Tensor> produced, ITestOutputHelper output)
    {
        var forwardNames = fixture.ForwardTensors;
        Assert.NotEmpty(forwardNames);
        output.WriteLine($"case {fixture.Id}:");
        foreach (var name in forwardNames)
        {
            Assert.True(produced.ContainsKey(name), $"case {fixture.Id}: the manifest lists {name}, which the forward pass does not produce");
            using var expected = reference.Read(name);
            TensorAssert.Close(expected, produced[name], name, output);
        }
    }

    /// <summary>Both the published diff (<c>config.json</c>) and upstream's full dump (<c>config_full.json</c>)
    /// bind every meaningful key.</summary>
    public static void ConfigKeysAllBound<TConfig>(FixtureCase fixture, ITestOutputHelper output) where TConfig : Common.PretrainedConfig
    {
        foreach (var file in new[] { "config.json", "config_full.json" })
        {
            var unbound = Common.PretrainedConfig.Read<TConfig>(Path.Combine(fixture.Path, file)).UnboundKeys().ToList();
            output.WriteLine($"{fixture.Id}/{file}: unbound meaningful keys: {(unbound.Count == 0 ? "none" : string.Join(", ", unbound))}");
            Assert.Empty(unbound);
        }
    }
}
