using System.Text.Json;
using Multimodal.Blip2;
using Multimodal.Common;
using Multimodal.Tests.TestSupport;
using Xunit.Abstractions;

namespace Multimodal.Tests.Modules;

/// <summary>Configs bind every meaningful key, and their defaults equal upstream's (published config.json
/// files are diffs against those defaults).</summary>
public sealed class ConfigBindingTests(ITestOutputHelper output)
{
    public static TheoryData<string> Cases
    {
        get
        {
            var data = FixtureCase.Ids("blip2");
            foreach (var c in FixtureCase.All().Where(c => c.Family == "blip2-retrieval")) data.Add(c.Id);
            return data;
        }
    }

    [SkippableTheory]
    [MemberData(nameof(Cases))]
    public void No_meaningful_key_of_a_fixture_config_is_left_unbound(string caseId)
    {
        var fixture = FixtureCase.Get(caseId);
        SupportedModels.SkipUnlessSupported(fixture);
        StructureAssert.ConfigKeysAllBound<Blip2Config>(fixture, output);
    }

    [SkippableTheory]
    [MemberData(nameof(Cases))]
    public void Defaults_fill_the_diff_exactly_as_upstream_did(string caseId)
    {
        var fixture = FixtureCase.Get(caseId);
        SupportedModels.SkipUnlessSupported(fixture);
        // config.json omits every value equal to upstream's default; config_full.json has them all.
        var ours = JsonSerializer.SerializeToElement(Blip2Config.Load(Path.Combine(fixture.Path, "config.json")), PretrainedConfig.JsonOptions);
        using var full = JsonDocument.Parse(File.ReadAllText(Path.Combine(fixture.Path, "config_full.json")));
        int compared = Compare(full.RootElement, ours, "");
        output.WriteLine($"{caseId}: {compared} bound values equal config_full.json");
        Assert.True(compared > 60, $"only {compared} values compared");
    }

    private static int Compare(JsonElement upstream, JsonElement ours, string path)
    {
        int count = 0;
        foreach (var property in upstream.EnumerateObject())
        {
            if (!ours.TryGetProperty(property.Name, out var mine)) continue; // generic keys we do not bind
            string key = path + property.Name;
            if (property.Value.ValueKind == JsonValueKind.Object && mine.ValueKind == JsonValueKind.Object)
            {
                count += Compare(property.Value, mine, key + ".");
                continue;
            }
            bool equal = property.Value.ValueKind == JsonValueKind.Number && mine.ValueKind == JsonValueKind.Number
                ? property.Value.GetDouble() == mine.GetDouble()
                : property.Value.GetRawText() == mine.GetRawText();
            Assert.True(equal, $"{key}: upstream {property.Value.GetRawText()}, ours {mine.GetRawText()}");
            count++;
        }
        return count;
    }

    [Fact]
    public void An_empty_config_is_blip2_opt_2_7b_shaped()
    {
        var config = JsonSerializer.Deserialize<Blip2Config>("{}", PretrainedConfig.JsonOptions)!.Normalize();
        Assert.Equal(1408, config.VisionConfig.HiddenSize);
        Assert.Equal(39, config.VisionConfig.NumHiddenLayers);
        Assert.Equal(32, config.NumQueryTokens);
        Assert.Equal(1408, config.QformerConfig.EncoderHiddenSize);
        Assert.Equal("opt", config.TextConfig.ModelType);
        Assert.True(config.UseDecoderOnlyLanguageModel);
    }
}
