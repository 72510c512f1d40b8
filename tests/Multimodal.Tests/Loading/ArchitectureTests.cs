using Multimodal.Blip2;
using Multimodal.Common;
using Multimodal.Flamingo;
using Multimodal.Idefics;
using Multimodal.Tests.TestSupport;

namespace Multimodal.Tests.Loading;

/// <summary>A checkpoint whose <c>architectures</c> names another class than the one loading it is refused
/// with both names, before any weight is read.</summary>
public sealed class ArchitectureTests
{
    [Fact]
    public void A_checkpoint_loaded_as_another_class_names_both()
    {
        var asCaptioner = Assert.Throws<ConfigException>(() => Blip2ForConditionalGeneration.FromPretrained(FixtureCase.Get("blip2-itm").Path));
        Assert.Contains("Blip2ForImageTextRetrieval", asCaptioner.Message);
        Assert.Contains("loaded as Blip2ForConditionalGeneration", asCaptioner.Message);

        var asRetriever = Assert.Throws<ConfigException>(() => Blip2ForImageTextRetrieval.FromPretrained(FixtureCase.Get("blip2-opt").Path));
        Assert.Contains("[Blip2ForConditionalGeneration]", asRetriever.Message);
        Assert.Contains("loaded as Blip2ForImageTextRetrieval", asRetriever.Message);

        var asIdefics = Assert.Throws<ConfigException>(() => IdeficsForVisionText2Text.FromPretrained(FixtureCase.Get("blip2-opt").Path));
        Assert.Contains("blip", asIdefics.Message, StringComparison.OrdinalIgnoreCase);   // its model_type is refused first

        // A file without the key (our own trained model writes null) passes.
        using var shapes = Blip2ForConditionalGeneration.FromPretrained(Repo.ShapesModel);
    }
}
