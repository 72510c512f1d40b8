using System.Net;
using System.Text;
using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Mvc.Testing;
using Microsoft.Extensions.AI;
using Multimodal.Blip2;
using Multimodal.Tests.TestSupport;
using Xunit.Abstractions;

namespace Multimodal.Tests.Server;

/// <summary><c>POST /v1/embeddings</c> on a server with a retrieval model beside a generative one: texts, and images
/// through the documented image_url extension, equal the library's embeddings, as floats and as base64; each model
/// refuses the other's endpoint by name.</summary>
public sealed class EmbeddingsEndpointTests(ITestOutputHelper output) : IDisposable
{
    private readonly TempDir _itm = Blip2.Blip2RetrieverTests.MakeFolder();
    private static readonly string Chelsea = Path.Combine(AppContext.BaseDirectory, "Images", "chelsea.png");

    public void Dispose() => _itm.Dispose();

    private WebApplicationFactory<Program> Factory() => new WebApplicationFactory<Program>().WithWebHostBuilder(b => b
        .UseSetting("Multimodal:Models:0:Name", "blip2-shapes").UseSetting("Multimodal:Models:0:Path", Repo.ShapesModel)
        .UseSetting("Multimodal:Models:1:Name", "blip2-itm").UseSetting("Multimodal:Models:1:Path", _itm.Path));

    private static async Task<(HttpStatusCode, JsonNode)> Post(HttpClient client, string path, string body)
    {
        var response = await client.PostAsync(path, new StringContent(body, Encoding.UTF8, "application/json"));
        return (response.StatusCode, JsonNode.Parse(await response.Content.ReadAsStringAsync())!);
    }

    [Fact]
    public async Task Text_and_image_embeddings_equal_the_librarys_and_each_model_refuses_the_other_endpoint()
    {
        using var factory = Factory();
        var client = factory.CreateClient();
        await ServerFixture.WaitReady(client);
        string image = "data:image/png;base64," + Convert.ToBase64String(File.ReadAllBytes(Chelsea));
        string body = """{"model":"blip2-itm","input":["a cat on the sofa",{"type":"image_url","image_url":{"url":"IMAGE"}},"a red car"]}""".Replace("IMAGE", image);
        var (status, json) = await Post(client, "/v1/embeddings", body);
        Assert.Equal(HttpStatusCode.OK, status);
        var data = json["data"]!.AsArray();
        Assert.Equal(3, data.Count);

        using var retriever = Blip2Retriever.FromPretrained(_itm.Path);
        var generator = retriever.AsEmbeddingGenerator();
        var texts = await ((IEmbeddingGenerator<string, Embedding<float>>)generator).GenerateAsync(["a cat on the sofa", "a red car"]);
        var images = await ((IEmbeddingGenerator<DataContent, Embedding<float>>)generator).GenerateAsync([new DataContent(File.ReadAllBytes(Chelsea), "image/png")]);
        float[] At(int i) => data[i]!["embedding"]!.AsArray().Select(v => (float)v!).ToArray();
        Assert.Equal(texts[0].Vector.ToArray(), At(0));
        Assert.Equal(images[0].Vector.ToArray(), At(1));
        Assert.Equal(texts[1].Vector.ToArray(), At(2));
        Assert.Equal(2, (int)data[2]!["index"]!);
        output.WriteLine($"text width {At(0).Length}, image width {At(1).Length} ({generator.ImageRows} query rows)");

        var (_, b64) = await Post(client, "/v1/embeddings", """{"model":"blip2-itm","input":"a cat on the sofa","encoding_format":"base64"}""");
        var bytes = Convert.FromBase64String((string)b64["data"]![0]!["embedding"]!);
        Assert.Equal(texts[0].Vector.ToArray(), System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(bytes).ToArray());

        foreach (var (path, request, param, code) in new[]
        {
            ("/v1/embeddings", """{"model":"blip2-shapes","input":"x"}""", "model", "model_not_supported"),
            ("/v1/chat/completions", """{"model":"blip2-itm","messages":[{"role":"user","content":"x"}]}""", "model", "model_not_supported"),
            ("/v1/embeddings", """{"model":"blip2-itm","input":[[1,2,3]]}""", "input[0]", null),
            ("/v1/embeddings", """{"model":"blip2-itm","input":[]}""", "input", null),
            ("/v1/embeddings", """{"model":"blip2-itm","input":"x","encoding_format":"int8"}""", "encoding_format", null),
        })
        {
            var (s, error) = await Post(client, path, request);
            output.WriteLine($"{request}: {(int)s} {error.ToJsonString()}");
            Assert.Equal(HttpStatusCode.BadRequest, s);
            Assert.Equal(param, (string?)error["error"]!["param"]);
            if (code is not null) Assert.Equal(code, (string?)error["error"]!["code"]);
        }
    }
}
