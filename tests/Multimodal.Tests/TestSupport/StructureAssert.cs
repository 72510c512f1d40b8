using Multimodal.Loading;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace Multimodal.Tests.TestSupport;

/// <summary>The structure check every parity family shares: a model's state_dict() names and shapes equal
/// the published file's header plus the keys the manifest says the file omits (tied duplicates).</summary>
public static class StructureAssert
{
    public static void StateDictEqualsFile(nn.Module model, FixtureCase fixture, ITestOutputHelper output, string file = "model.safetensors")
    {
        var ours = model.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.shape);
        using var weights = SafetensorsFile.Open(Path.Combine(fixture.Path, file));
        var expected = weights.Entries.Keys.Concat(fixture.KeysNotInFile).Order(StringComparer.Ordinal).ToList();
        Assert.Equal(expected, ours.Keys.Order(StringComparer.Ordinal).ToList());
        foreach (var (name, entry) in weights.Entries)
            Assert.True(entry.Shape.SequenceEqual(ours[name]), $"{name}: ours {string.Join("x", ours[name])}, file {string.Join("x", entry.Shape)}");
        output.WriteLine($"case {fixture.Id}: {ours.Count} state_dict keys = {weights.Entries.Count} in {file} + {fixture.KeysNotInFile.Count} tied");
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
