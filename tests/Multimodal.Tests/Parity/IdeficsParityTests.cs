using Multimodal.Common;
using Multimodal.Flamingo;
using Multimodal.Idefics;
using Multimodal.Loading;
using Multimodal.Tests.TestSupport;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace Multimodal.Tests.Parity;

/// <summary>Data-driven parity over the IDEFICS cases: structure, forward intermediates, generation.</summary>
public sealed class IdeficsParityTests(ITestOutputHelper output)
{
    public static TheoryData<string> Cases => FixtureCase.Ids("idefics");

    public static TheoryData<string, string> Variants() => Blip2GenerationParityTests.VariantsOf("idefics");

    [SkippableTheory]
    [MemberData(nameof(Cases))]
    public void State_dict_names_and_shapes_equal_the_published_file(string caseId)
    {
        var fixture = FixtureCase.Get(caseId);
        SupportedModels.SkipUnlessSupported(fixture);
        using var model = new IdeficsForVisionText2Text(IdeficsConfig.Load(Path.Combine(fixture.Path, "config.json")), META);
        StructureAssert.StateDictEqualsFile(model, fixture, output, map: IdeficsKeyMap.Map);
    }

    [SkippableTheory]
    [MemberData(nameof(Cases))]
    public void No_meaningful_config_key_is_left_unbound(string caseId)
    {
        var fixture = FixtureCase.Get(caseId);
        SupportedModels.SkipUnlessSupported(fixture);
        StructureAssert.ConfigKeysAllBound<IdeficsConfig>(fixture, output);
    }

    [SkippableTheory]
    [MemberData(nameof(Cases))]
    public void Forward_intermediates_match_the_reference(string caseId)
    {
        var fixture = FixtureCase.Get(caseId);
        SupportedModels.SkipUnlessSupported(fixture);
        using var model = IdeficsForVisionText2Text.FromPretrained(fixture.Path);
        using var reference = fixture.OpenReference();
        using var scope = NewDisposeScope();
        using var result = model.Forward(reference.Read("input_ids"), reference.Read("attention_mask"),
            reference.Read("pixel_values"), reference.Read("image_attention_mask"));
        output.WriteLine($"case {caseId}:");
        StructureAssert.ForwardTensorsMatch(fixture, reference, result.ByReferenceName, output);
    }

    [SkippableTheory]
    [MemberData(nameof(Variants))]
    public void Generated_ids_and_scores_match_the_reference(string caseId, string variant)
    {
        var fixture = FixtureCase.Get(caseId);
        SupportedModels.SkipUnlessSupported(fixture);
        var (kwargs, options) = Blip2GenerationParityTests.OptionsFor(fixture, variant);
        using var model = IdeficsForVisionText2Text.FromPretrained(fixture.Path);
        using var reference = fixture.OpenReference();
        using var scope = NewDisposeScope();
        using var result = model.Generate(reference.Read("input_ids"), reference.Read("attention_mask"),
            reference.Read("pixel_values"), reference.Read("image_attention_mask"), options);
        output.WriteLine($"case {caseId}, {variant}: {kwargs}");
        Blip2GenerationParityTests.CompareGeneration(fixture, reference, variant, result, output);
    }
}
