namespace Multimodal.Tests.TestSupport;

/// <summary>Which upstream classes the library implements, so a case is either checked or skipped with
/// the name of the class it is waiting for.</summary>
public static class SupportedModels
{
    private static readonly HashSet<string> Implemented =
    [
        "Blip2ForConditionalGeneration", "Blip2VisionModel", "Blip2QFormerModel", "OPTForCausalLM", "T5ForConditionalGeneration",
        "Blip2ForImageTextRetrieval", "Blip2TextModelWithProjection", "Blip2VisionModelWithProjection",
        "open_flamingo.Flamingo", "open_flamingo.src.flamingo_lm.FlamingoLMMixin/FlamingoLayer",
        "open_flamingo.src.helpers.PerceiverResampler/GatedCrossAttentionBlock/MaskedCrossAttention",
        "open_clip.model.CLIP/.visual: open_clip.transformer.VisionTransformer", "transformers.MptForCausalLM", "transformers.GPTNeoXForCausalLM", "transformers.LlamaForCausalLM",
        "IdeficsForVisionText2Text", "IdeficsModel", "IdeficsVisionTransformer", "IdeficsPerceiverResampler",
        "IdeficsGatedCrossAttentionLayer", "IdeficsDecoderLayer",
        "InstructBlipForConditionalGeneration", "InstructBlipVisionModel", "InstructBlipQFormerModel", "LlamaForCausalLM",
    ];

    // Manifests may add a note in parentheses after the class ("transformers.MptForCausalLM (HF port ...)").
    private static string Name(string cls) => cls.Split(" (")[0];

    /// <summary>The first class of the case that is not implemented, or null when all are.</summary>
    public static string? MissingClass(FixtureCase fixture) =>
        fixture.Classes.FirstOrDefault(c => !Implemented.Contains(Name(c)));

    /// <summary>Skips the running test when the case needs a class that is not implemented yet.</summary>
    public static void SkipUnlessSupported(FixtureCase fixture)
    {
        var missing = MissingClass(fixture);
        Skip.If(missing is not null, $"case {fixture.Id}: model class {missing} is not implemented yet");
    }
}
