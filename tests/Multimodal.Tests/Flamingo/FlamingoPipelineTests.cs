using Microsoft.Extensions.AI;
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

    [Fact]
    public async Task Over_LLaMA_the_prompt_starts_with_BOS_takes_the_extended_tokenizer_and_equals_generate()
    {
        using var folder = FlamingoLlamaFolder.Create();
        using var pipeline = FlamingoPipeline.FromPretrained(folder.Path);
        var tokenizer = pipeline.Tokenizer;
        // create_model_and_transforms appends the three tokens after LLaMA's 32,000 pieces.
        Assert.Equal([32000L], tokenizer.Encode("<|endofchunk|>", addSpecialTokens: false));
        Assert.Equal([32001L], tokenizer.Encode("<image>", addSpecialTokens: false));
        Assert.Equal([32002L], tokenizer.Encode("<PAD>", addSpecialTokens: false));

        var images = new[] { "chelsea.png", "coffee_q90.jpg" }.Select(f => ImageDecoder.Decode(Path.Combine(AppContext.BaseDirectory, "Images", f))).ToArray();
        var prompt = InterleavedPrompt.FewShot([(images[0], "A cat.")], images[1], "A");
        var ids = tokenizer.Encode(prompt.ToOpenFlamingoText()).ToArray();
        output.WriteLine($"prompt ids {string.Join(" ", ids)}");
        Assert.Equal([1L, 32001], ids[..2]);                                  // <s> before the first <image>
        Assert.Equal(2, ids.Count(id => id == 32001));
        Assert.Equal(1, ids.Count(id => id == 32000));
        Assert.Equal(tokenizer.Encode("A cat.", addSpecialTokens: false), ids[2..Array.IndexOf(ids, 32000L)]);

        var options = new GenerationOptions { MaxNewTokens = 6 };
        var result = await pipeline.GenerateAsync(prompt, options);
        using var pixels = new OpenClipImageProcessor(30).Preprocess(images);
        using var visionX = pixels.view(1, 2, 1, 3, 30, 30);
        using var direct = pipeline.Model.Generate(visionX, tensor(ids).unsqueeze(0), null, options);
        output.WriteLine($"pipeline ids {string.Join(" ", result.Ids)}; text \"{result.Text}\" ({result.FinishReason})");
        Assert.Equal(direct.Sequences[0], result.Ids);
        Assert.Equal(ids.Length, result.InputTokens);
        Assert.Equal(tokenizer.Decode(direct.Sequences[0].Skip(ids.Length)).Trim(), result.Text);

        var chat = pipeline.AsChatClient();
        var response = await chat.GetResponseAsync(
            [new ChatMessage(ChatRole.User, [new DataContent(File.ReadAllBytes(Path.Combine(AppContext.BaseDirectory, "Images", "coffee_q90.jpg")), "image/jpeg"), new TextContent("A")])],
            new ChatOptions { MaxOutputTokens = 6 });
        var alone = await pipeline.GenerateAsync(InterleavedPrompt.FewShot([], images[1], "A"), options);
        Assert.Equal(alone.Text, response.Text);
    }

    [Fact]
    public void A_tokenizer_of_another_vocabulary_is_refused_naming_the_ids()
    {
        using var folder = TempDir.CopyOf(FixtureCase.Get("openflamingo-llama").Path);
        File.Copy(Path.Combine(AppContext.BaseDirectory, "Tokenizers", "llama", "tokenizer.model"), Path.Combine(folder.Path, "tokenizer.model"));
        var e = Assert.Throws<Multimodal.Common.ConfigException>(() => FlamingoPipeline.FromPretrained(folder.Path).Dispose());
        output.WriteLine(e.Message);
        Assert.Contains("<|endofchunk|>", e.Message);
        Assert.Contains("[32000]", e.Message);
        Assert.Contains("50", e.Message);
    }
}
