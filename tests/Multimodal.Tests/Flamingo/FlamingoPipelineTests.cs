using Multimodal.Flamingo;
using Multimodal.Generation;
using Multimodal.Processing;
using Multimodal.Tests.TestSupport;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace Multimodal.Tests.Flamingo;

/// <summary>The OpenFlamingo pipeline end to end on the fixture model, with a made-up 50-symbol tokenizer
/// (one byte-level symbol per id, so OpenFlamingo's three tokens land on the fixture's ids 50–52): the
/// pipeline must give exactly what the model gives on inputs built by hand.</summary>
public sealed class FlamingoPipelineTests(ITestOutputHelper output)
{
    [Fact]
    public async Task The_pipeline_equals_generate_on_hand_built_inputs()
    {
        using var folder = TempDir.CopyOf(FixtureCase.Get("openflamingo").Path);
        FlamingoTokenizer.WriteFiftySymbols(folder.Path);
        using var pipeline = FlamingoPipeline.FromPretrained(folder.Path);

        var images = new[] { "chelsea.png", "coffee_q90.jpg" }.Select(f => ImageDecoder.Decode(Path.Combine(AppContext.BaseDirectory, "Images", f))).ToArray();
        var prompt = InterleavedPrompt.FewShot([(images[0], "ABC.")], images[1], "AB");
        var options = new GenerationOptions { MaxNewTokens = 6 };
        var result = await pipeline.GenerateAsync(prompt, options);

        var ids = pipeline.Tokenizer.Encode(prompt.ToOpenFlamingoText(), addSpecialTokens: false).ToArray();
        Assert.Equal([51L, 32, 33, 34, 13, 50, 51, 32, 33], ids);   // <image>ABC.<|endofchunk|><image>AB
        using var pixels = new OpenClipImageProcessor(30).Preprocess(images);
        using var visionX = pixels.view(1, 2, 1, 3, 30, 30);
        using var direct = pipeline.Model.Generate(visionX, tensor(ids).unsqueeze(0), null, options);
        output.WriteLine($"pipeline ids {string.Join(" ", result.Ids)}; text \"{result.Text}\"");
        Assert.Equal(direct.Sequences[0], result.Ids);
        Assert.Equal(pipeline.Tokenizer.Decode(direct.Sequences[0].Skip(ids.Length)), result.Text);
    }
}
