using Multimodal.InstructBlip;
using Multimodal.Loading;
using Multimodal.Tests.TestSupport;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace Multimodal.Tests.Parity;

/// <summary>Data-driven parity over the InstructBLIP cases (Vicuna/LLaMA in both layouts, Flan-T5): structure,
/// every forward intermediate (both LLaMA position rules), every generation variant, and a sharded copy.</summary>
public sealed class InstructBlipParityTests(ITestOutputHelper output)
{
    public static TheoryData<string> Cases => FixtureCase.Ids("instructblip");

    public static TheoryData<string, string> Variants() => Blip2GenerationParityTests.VariantsOf("instructblip");

    [SkippableTheory]
    [MemberData(nameof(Cases))]
    public void State_dict_names_and_shapes_equal_the_published_file(string caseId)
    {
        var fixture = FixtureCase.Get(caseId);
        SupportedModels.SkipUnlessSupported(fixture);
        using var model = new InstructBlipForConditionalGeneration(InstructBlipConfig.Load(Path.Combine(fixture.Path, "config.json")), META);
        StructureAssert.StateDictEqualsFile(model, fixture, output);
    }

    [SkippableTheory]
    [MemberData(nameof(Cases))]
    public void No_meaningful_config_key_is_left_unbound(string caseId)
    {
        var fixture = FixtureCase.Get(caseId);
        SupportedModels.SkipUnlessSupported(fixture);
        StructureAssert.ConfigKeysAllBound<InstructBlipConfig>(fixture, output);
    }

    [SkippableTheory]
    [MemberData(nameof(Cases))]
    public void Forward_intermediates_match_the_reference(string caseId)
    {
        var fixture = FixtureCase.Get(caseId);
        SupportedModels.SkipUnlessSupported(fixture);
        using var model = InstructBlipForConditionalGeneration.FromPretrained(fixture.Path);
        using var reference = fixture.OpenReference();
        using var result = RunForward(model, reference);
        StructureAssert.ForwardTensorsMatch(fixture, reference, result.ByReferenceName, output);
    }

    [SkippableTheory]
    [MemberData(nameof(Variants))]
    public void Generated_ids_and_scores_match_the_reference(string caseId, string variant)
    {
        var fixture = FixtureCase.Get(caseId);
        SupportedModels.SkipUnlessSupported(fixture);
        var (kwargs, options) = Blip2GenerationParityTests.OptionsFor(fixture, variant);
        using var model = InstructBlipForConditionalGeneration.FromPretrained(fixture.Path);
        using var reference = fixture.OpenReference();
        using var scope = NewDisposeScope();
        using var result = model.Generate(reference.Read("pixel_values"), reference.Read("qformer_input_ids"), reference.Read("qformer_attention_mask"),
            reference.Read("input_ids"), reference.Read("attention_mask"), options);
        output.WriteLine($"case {caseId}, {variant}: {kwargs}");
        Blip2GenerationParityTests.CompareGeneration(fixture, reference, variant, result, output);
    }

    [SkippableTheory]
    [MemberData(nameof(Cases))]
    public void A_hub_layout_sharded_copy_loads_the_same(string caseId)
    {
        var fixture = FixtureCase.Get(caseId);
        SupportedModels.SkipUnlessSupported(fixture);
        using var temp = new TempDir();
        int shards = Blip2ParityTests.WriteShardedCopy(fixture.Path, temp.Path, shardCount: 3);
        using var reference = fixture.OpenReference();
        using var sharded = InstructBlipForConditionalGeneration.FromPretrained(temp.Path);
        using var result = RunForward(sharded, reference);
        using var expected = reference.Read("logits");
        output.WriteLine($"case {caseId}: {shards} shards");
        TensorAssert.Close(expected, result.Logits, "logits (sharded)", output);
    }

    internal static InstructBlipForwardOutput RunForward(InstructBlipForConditionalGeneration model, SafetensorsFile reference)
    {
        using var scope = NewDisposeScope();
        var decoderIds = reference.Entries.ContainsKey("decoder_input_ids") ? reference.Read("decoder_input_ids") : null;
        var result = model.Forward(reference.Read("pixel_values"), reference.Read("qformer_input_ids"), reference.Read("qformer_attention_mask"),
            reference.Read("input_ids"), reference.Read("attention_mask"), decoderIds);
        foreach (var t in result.ByReferenceName.Values) t.MoveToOuterDisposeScope();
        return result;
    }
}
