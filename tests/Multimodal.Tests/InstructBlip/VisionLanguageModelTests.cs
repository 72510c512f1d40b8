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

/// <summary>InstructBLIP through the user-facing entry points on a folder that runs with the real tokenizers: the
/// caption sample and the server answer what the façade answers.</summary>
public sealed class InstructBlipEntryPointTests(ITestOutputHelper output)
{
    [Fact]
    public async Task The_sample_and_the_server_answer_what_the_facade_answers()
    {
        using var folder = InstructBlipFolder.Create();
        const string question = "What is in the picture?";
        var options = new Multimodal.Generation.GenerationOptions { MaxNewTokens = 6 };
        string expected;
        using (var model = InstructBlipCaptioner.FromPretrained(folder.Path))
            expected = (await model.AskAsync(Repo.Scene1, question, options)).Text;
        output.WriteLine($"façade: \"{expected}\"");

        var (code, stdout, stderr) = Repo.Run(Repo.Dotnet, [Repo.CaptionSample, "--model", folder.Path, Repo.Scene1, "--question", question, "--max-new-tokens", "6"],
            Repo.Root, TimeSpan.FromMinutes(2));
        output.WriteLine(stdout + stderr);
        Assert.Equal(0, code);
        Assert.Equal($"{Repo.Scene1}: {expected}", stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries).Last().TrimEnd());

        using var factory = new Microsoft.AspNetCore.Mvc.Testing.WebApplicationFactory<Program>().WithWebHostBuilder(b => b
            .UseSetting("Multimodal:Models:0:Name", "instructblip").UseSetting("Multimodal:Models:0:Path", folder.Path));
        var client = factory.CreateClient();
        await Server.ServerFixture.WaitReady(client);
        string body = "{\"model\":\"instructblip\",\"max_tokens\":6,\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\",\"image_url\":{\"url\":\""
            + Server.ServerFixture.Scene1DataUri + "\"}},{\"type\":\"text\",\"text\":\"" + question + "\"}]}]}";
        var response = await client.PostAsync("/v1/chat/completions", new StringContent(body, System.Text.Encoding.UTF8, "application/json"));
        string json = await response.Content.ReadAsStringAsync();
        output.WriteLine(json);
        Assert.True(response.IsSuccessStatusCode, json);
        Assert.Equal(expected, (string?)System.Text.Json.Nodes.JsonNode.Parse(json)!["choices"]![0]!["message"]!["content"]);
    }
}
