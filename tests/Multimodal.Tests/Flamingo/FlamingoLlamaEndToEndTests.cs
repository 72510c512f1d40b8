using System.Text;
using System.Text.Json.Nodes;
using Multimodal.Flamingo;
using Multimodal.Generation;
using Multimodal.Processing;
using Multimodal.Tests.TestSupport;
using Xunit.Abstractions;

namespace Multimodal.Tests.Flamingo;

/// <summary>OpenFlamingo over LLaMA (OpenFlamingo-9B-deprecated's layout) in the sample and the server: both answer what
/// the pipeline answers on the same folder.</summary>
public sealed class FlamingoLlamaEndToEndTests(ITestOutputHelper output)
{
    [Fact]
    public async Task The_sample_and_the_server_answer_what_the_pipeline_answers()
    {
        using var folder = FlamingoLlamaFolder.Create();
        var options = new GenerationOptions { MaxNewTokens = 6 };
        string expected;
        using (var pipeline = FlamingoPipeline.FromPretrained(folder.Path))
            expected = (await pipeline.GenerateAsync(InterleavedPrompt.FewShot([], ImageDecoder.Decode(Repo.Scene1), "An image of"), options)).Text;
        output.WriteLine($"pipeline: \"{expected}\"");

        var (code, stdout, stderr) = Repo.Run(Repo.Dotnet,
            [Repo.CaptionSample, "--model", folder.Path, "--image", Repo.Scene1, "--text", "An image of", "--max-new-tokens", "6"], Repo.Root, TimeSpan.FromMinutes(2));
        output.WriteLine(stdout + stderr);
        Assert.Equal(0, code);
        Assert.Equal(expected.Length > 0 ? expected : "(empty: the model ended the text at once)",
            stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries).Last().TrimEnd());

        using var factory = new Microsoft.AspNetCore.Mvc.Testing.WebApplicationFactory<Program>().WithWebHostBuilder(b => b
            .UseSetting("Multimodal:Models:0:Name", "flamingo-llama").UseSetting("Multimodal:Models:0:Path", folder.Path));
        var client = factory.CreateClient();
        await Server.ServerFixture.WaitReady(client);
        string body = "{\"model\":\"flamingo-llama\",\"max_tokens\":6,\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\",\"image_url\":{\"url\":\""
            + Server.ServerFixture.Scene1DataUri + "\"}},{\"type\":\"text\",\"text\":\"An image of\"}]}]}";
        var response = await client.PostAsync("/v1/chat/completions", new StringContent(body, Encoding.UTF8, "application/json"));
        string json = await response.Content.ReadAsStringAsync();
        output.WriteLine(json);
        Assert.True(response.IsSuccessStatusCode, json);
        Assert.Equal(expected, (string?)JsonNode.Parse(json)!["choices"]![0]!["message"]!["content"]);
    }
}
