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
    public async Task The_interleaved_families_load_through_the_same_switch_and_caption_ask_and_stream_a_single_image()
    {
        var image = ImageDecoder.Decode(Repo.Scene1);
        var options = new Multimodal.Generation.GenerationOptions { MaxNewTokens = 5 };
        using (var idefics = IdeficsFolder.Create())
        using (var model = VisionLanguageModel.FromPretrained(idefics.Path))
        {
            var pipeline = Assert.IsType<Multimodal.Idefics.IdeficsPipeline>(model);
            Assert.Equal(ModelFamily.Idefics, VisionLanguageModel.Family(idefics.Path));
            var asked = await model.AskAsync(image, "What is it?", options);
            var direct = await pipeline.GenerateAsync(InterleavedPrompt.Create().Text("User:").Image(image).Text("What is it?<end_of_utterance>").Text("\nAssistant:"), options);
            Assert.Equal(direct.Ids, asked.Ids);
            Assert.Equal(2048, model.ContextLength);
        }
        using (var flamingo = FlamingoLlamaFolder.Create())
        using (var model = VisionLanguageModel.FromPretrained(flamingo.Path))
        {
            var pipeline = Assert.IsType<Multimodal.Flamingo.FlamingoPipeline>(model);
            Assert.Equal(ModelFamily.OpenFlamingo, VisionLanguageModel.Family(flamingo.Path));
            var caption = await model.CaptionAsync(image, options);
            var direct = await pipeline.GenerateAsync(InterleavedPrompt.FewShot([], image, "An image of"), options);
            Assert.Equal(direct.Ids, caption.Ids);
            var streamed = new System.Text.StringBuilder();
            Multimodal.Generation.TextResult? last = null;
            await foreach (var chunk in model.StreamAsync(image, null, options)) { streamed.Append(chunk.Text); last = chunk.Result ?? last; }
            Assert.Equal(caption.Text, streamed.ToString().Trim());
            Assert.Equal(caption.Ids, last!.Ids);
            output.WriteLine($"OpenFlamingo caption \"{caption.Text}\", {model.Tokenizer.GetType().Name}, context {model.ContextLength}");
        }
    }

    // One façade shape: every family captions and answers alone and in batches, whole and streamed as text, the same.
    [Theory]
    [InlineData("blip2")]
    [InlineData("instructblip-t5")]
    [InlineData("idefics")]
    [InlineData("openflamingo-llama")]
    public async Task Every_family_gives_the_same_answer_alone_batched_and_streamed(string family)
    {
        using var folder = family switch
        {
            "blip2" => TempDir.CopyOf(Repo.ShapesModel),
            "instructblip-t5" => InstructBlipT5Folder.Create(),
            "idefics" => IdeficsFolder.Create(),
            _ => FlamingoLlamaFolder.Create(),
        };
        using var model = VisionLanguageModel.FromPretrained(folder.Path);
        var images = new[] { "scene1.png", "scene2.png" }.Select(f => ImageDecoder.Decode(Path.Combine(Repo.Root, "samples", "images", f))).ToList();
        var options = new Multimodal.Generation.GenerationOptions { MaxNewTokens = 5 };
        var alone = new List<string>();
        foreach (var image in images) alone.Add((await model.CaptionAsync(image, options)).Text);
        var batched = await model.CaptionAsync(images, options);
        Assert.Equal(alone, batched.Select(r => r.Text));
        var streamed = new System.Text.StringBuilder();
        await foreach (var piece in model.CaptionStreamAsync(images[1], options)) streamed.Append(piece);
        Assert.Equal(alone[1], streamed.ToString().Trim());

        string[] questions = ["what", "which shape"];
        var answers = await model.AskAsync(images, questions, options);
        for (int i = 0; i < images.Count; i++)
            Assert.Equal((await model.AskAsync(images[i], questions[i], options)).Ids, answers[i].Ids);
        var answerStream = new System.Text.StringBuilder();
        await foreach (var piece in model.AskStreamAsync(images[0], questions[0], options)) answerStream.Append(piece);
        Assert.Equal(answers[0].Text, answerStream.ToString().Trim());
        output.WriteLine($"{family}: captions [{string.Join(" | ", alone)}], answers [{string.Join(" | ", answers.Select(a => a.Text))}]");
    }

    [Fact]
    public void A_retrieval_model_and_unknown_model_types_are_refused_naming_what_loads_them()
    {
        using var folder = TempDir.CopyOf(FixtureCase.Get("blip2-itm").Path);
        Assert.Equal(ModelFamily.Blip2Retrieval, VisionLanguageModel.Family(folder.Path));
        var retrieval = Assert.Throws<ConfigException>(() => VisionLanguageModel.FromPretrained(folder.Path));
        output.WriteLine(retrieval.Message);
        Assert.Contains("Blip2Retriever", retrieval.Message);
        File.WriteAllText(Path.Combine(folder.Path, "config.json"), """{"model_type": "llava"}""");
        var unknown = Assert.Throws<ConfigException>(() => VisionLanguageModel.FromPretrained(folder.Path));
        output.WriteLine(unknown.Message);
        Assert.Contains("\"llava\"", unknown.Message);
        File.WriteAllText(Path.Combine(folder.Path, "config.json"), """{"hidden_size": 3}""");
        Assert.Contains("no model_type", Assert.Throws<ConfigException>(() => VisionLanguageModel.Family(folder.Path)).Message);
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
