using Multimodal.Generation;
using Multimodal.Flamingo;
using Multimodal.Language;
using Multimodal.Loading;
using Multimodal.Tests.TestSupport;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace Multimodal.Tests.Parity;

/// <summary>Data-driven parity over the OpenFlamingo cases: structure, forward intermediates and every
/// generation variant the manifest records.</summary>
public sealed class FlamingoParityTests(ITestOutputHelper output)
{
    public static TheoryData<string> Cases => FixtureCase.Ids("flamingo");

    public static TheoryData<string, string> Variants() => Blip2GenerationParityTests.VariantsOf("flamingo");

    [SkippableTheory]
    [MemberData(nameof(Cases))]
    public void State_dict_names_and_shapes_equal_the_published_file(string caseId)
    {
        var fixture = FixtureCase.Get(caseId);
        SupportedModels.SkipUnlessSupported(fixture);
        using var model = new FlamingoModel(FlamingoConfig.Load(Path.Combine(fixture.Path, "config.json")), META);
        StructureAssert.StateDictEqualsFile(model, fixture, output);
    }

    [SkippableTheory]
    [MemberData(nameof(Cases))]
    public void Forward_intermediates_match_the_reference(string caseId)
    {
        var fixture = FixtureCase.Get(caseId);
        SupportedModels.SkipUnlessSupported(fixture);
        using var model = FlamingoModel.FromPretrained(fixture.Path);
        using var reference = fixture.OpenReference();
        using var visionX = reference.Read("vision_x");
        using var langX = reference.Read("lang_x");
        using var mask = reference.Read("attention_mask");
        using var result = model.Forward(visionX, langX, mask);
        output.WriteLine($"case {caseId}:");
        Assert.NotEmpty(fixture.ForwardTensors);
        foreach (var name in fixture.ForwardTensors)
        {
            using var expected = reference.Read(name);
            if (name == "lang_encoder_only_logits")
            {
                using var lm = CausalLanguageModels.FromPretrained(Path.Combine(fixture.Path, "lang_encoder"));
                using var inference = inference_mode();
                var causal = (ICausalLanguageModel)lm;
                using var logits = CausalLanguageModels.ForwardLogits(lm, causal.EmbedTokens(langX), mask);
                TensorAssert.Close(expected, logits, name, output);
                continue;
            }
            Assert.True(result.ByReferenceName.ContainsKey(name), $"case {caseId}: the manifest lists {name}, which the forward pass does not produce");
            TensorAssert.Close(expected, result.ByReferenceName[name], name, output);
        }
    }

    [SkippableTheory]
    [MemberData(nameof(Variants))]
    public void Generated_ids_and_scores_match_the_reference(string caseId, string variant)
    {
        var fixture = FixtureCase.Get(caseId);
        SupportedModels.SkipUnlessSupported(fixture);
        var (kwargs, options) = Blip2GenerationParityTests.OptionsFor(fixture, variant);
        using var model = FlamingoModel.FromPretrained(fixture.Path);
        using var reference = fixture.OpenReference();
        using var visionX = reference.Read("vision_x");
        using var langX = reference.Read("lang_x");
        using var mask = reference.Read("attention_mask");
        using var result = model.Generate(visionX, langX, mask, options);
        output.WriteLine($"case {caseId}, {variant}: {kwargs}");
        Blip2GenerationParityTests.CompareGeneration(fixture, reference, variant, result, output);
    }
}
