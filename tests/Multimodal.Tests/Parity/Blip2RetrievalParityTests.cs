using Multimodal.Blip2;
using Multimodal.Loading;
using Multimodal.Tests.TestSupport;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace Multimodal.Tests.Parity;

/// <summary>Data-driven parity over the BLIP-2 retrieval cases: structure, ITM, ITC and the projection models.</summary>
public sealed class Blip2RetrievalParityTests(ITestOutputHelper output)
{
    public static TheoryData<string> Cases => FixtureCase.Ids("blip2-retrieval");

    [SkippableTheory]
    [MemberData(nameof(Cases))]
    public void State_dict_names_and_shapes_equal_the_published_file(string caseId)
    {
        var fixture = FixtureCase.Get(caseId);
        SupportedModels.SkipUnlessSupported(fixture);
        using var model = new Blip2ForImageTextRetrieval(Blip2Config.Load(Path.Combine(fixture.Path, "config.json")), META);
        StructureAssert.StateDictEqualsFile(model, fixture, output);
    }

    [SkippableTheory]
    [MemberData(nameof(Cases))]
    public void Matching_contrastive_and_projection_outputs_match_the_reference(string caseId)
    {
        var fixture = FixtureCase.Get(caseId);
        SupportedModels.SkipUnlessSupported(fixture);
        using var model = Blip2ForImageTextRetrieval.FromPretrained(fixture.Path);
        using var reference = fixture.OpenReference();
        using var scope = NewDisposeScope();
        var results = new Dictionary<string, Tensor>();
        using (var itm = model.ImageTextMatching(reference.Read("itm_pixel_values"), reference.Read("itm_input_ids"), reference.Read("itm_attention_mask")))
        using (var itc = model.ImageTextContrastive(reference.Read("pixel_values"), reference.Read("input_ids"), reference.Read("attention_mask")))
        {
            results["itm_logits"] = itm.Logits.clone();
            results["itm_qformer_last_hidden_state"] = itm.QFormerLastHiddenState.clone();
            results["itc_logits_per_image"] = itc.LogitsPerImage.clone();
            results["itc_logits_per_text"] = itc.LogitsPerText.clone();
            results["itc_image_embeds"] = itc.ImageEmbeds.clone();
            results["itc_text_embeds"] = itc.TextEmbeds.clone();
            results["vision_last_hidden_state"] = itc.VisionLastHiddenState.clone();
            results["itc_text_last_hidden_state"] = itc.TextLastHiddenState.clone();
        }
        results["text_with_projection_text_embeds"] = model.EmbedTexts(reference.Read("input_ids"), reference.Read("attention_mask"));
        results["vision_with_projection_image_embeds"] = model.EmbedImages(reference.Read("pixel_values"));
        output.WriteLine($"case {caseId}:");
        Assert.NotEmpty(fixture.ForwardTensors);
        foreach (var name in fixture.ForwardTensors)
        {
            Assert.True(results.ContainsKey(name), $"case {caseId}: the manifest lists {name}, which no output produces");
            TensorAssert.Close(reference.Read(name), results[name], name, output);
        }
    }
}
