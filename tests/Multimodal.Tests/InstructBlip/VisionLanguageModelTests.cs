using Multimodal.Blip2;
using Multimodal.Common;
using Multimodal.InstructBlip;
using Multimodal.Processing;
using Multimodal.Tests.TestSupport;
using Xunit.Abstractions;

namespace Multimodal.Tests.InstructBlip;

/// <summary><see cref="VisionLanguageModel.FromPretrained"/> picks the family from config.json's model_type.</summary>
public sealed class VisionLanguageModelTests(ITestOutputHelper output)
{
    [Fact]
    public async Task A_BLIP2_folder_gives_the_BLIP2_facade_with_its_caption()
    {
        using var model = VisionLanguageModel.FromPretrained(Repo.ShapesModel);
        Assert.IsType<Blip2Captioner>(model);
        var image = ImageDecoder.Decode(Repo.Scene1);
        using var direct = Blip2Captioner.FromPretrained(Repo.ShapesModel);
        Assert.Equal((await direct.CaptionAsync(image)).Text, (await model.CaptionAsync(image)).Text);
        var options = new Multimodal.Generation.GenerationOptions { MaxNewTokens = 8 };        // the shapes model has 64 positions
        Assert.Equal((await direct.AskAsync(image, "what", options)).Text, (await model.AskAsync(image, "what", options)).Text);
    }

    [Fact]
    public void An_InstructBLIP_folder_gives_the_InstructBLIP_facade()
    {
        using var folder = TempDir.CopyOf(FixtureCase.Get("instructblip-t5").Path);
        string tokenizers = Path.Combine(AppContext.BaseDirectory, "Tokenizers");
        File.Copy(Path.Combine(tokenizers, "t5", "spiece.model"), Path.Combine(folder.Path, "spiece.model"));
        Directory.CreateDirectory(Path.Combine(folder.Path, "qformer_tokenizer"));
        File.Copy(Path.Combine(tokenizers, "bert", "vocab.txt"), Path.Combine(folder.Path, "qformer_tokenizer", "vocab.txt"));
        File.Copy(Path.Combine(AppContext.BaseDirectory, "Preprocess", "configs", "blip2-opt-2.7b", "preprocessor_config.json"),
            Path.Combine(folder.Path, "preprocessor_config.json"));
        using var model = VisionLanguageModel.FromPretrained(folder.Path);
        Assert.IsType<InstructBlipCaptioner>(model);
        Assert.NotNull(model.AsChatClient());
    }

    [Fact]
    public void Other_model_types_are_refused_naming_the_class_that_loads_them()
    {
        var idefics = Assert.Throws<ConfigException>(() => VisionLanguageModel.FromPretrained(FixtureCase.Get("idefics").Path));
        output.WriteLine(idefics.Message);
        Assert.Contains("IdeficsPipeline", idefics.Message);
        var flamingo = Assert.Throws<ConfigException>(() => VisionLanguageModel.FromPretrained(FixtureCase.Get("openflamingo").Path));
        output.WriteLine(flamingo.Message);
        Assert.Contains("model_type", flamingo.Message);
    }
}
