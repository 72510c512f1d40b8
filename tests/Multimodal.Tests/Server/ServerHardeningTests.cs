using System.ClientModel;
using System.ClientModel.Primitives;
using System.Diagnostics;
using System.Net;
using System.Text;
using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Mvc.Testing;
using Microsoft.Extensions.AI;
using Multimodal.Tests.TestSupport;
using OpenAI;
using OpenAI.Chat;
using Xunit.Abstractions;
using ChatMessage = Microsoft.Extensions.AI.ChatMessage;

namespace Multimodal.Tests.Server;

/// <summary>The server with an API key, file URLs under a root and one CORS origin, in process.</summary>
public sealed class KeyedServerFixture : IAsyncLifetime
{
    public const string Key = "sk-test-0123456789";
    public const string AllowedOrigin = "http://allowed.example";

    public TempDir Files { get; } = new();

    public WebApplicationFactory<Program> Factory { get; private set; } = null!;

    public async Task InitializeAsync()
    {
        Directory.CreateDirectory(Path.Combine(Files.Path, "root"));
        File.Copy(Repo.Scene1, Path.Combine(Files.Path, "root", "scene1.png"));
        File.WriteAllText(Path.Combine(Files.Path, "secret.txt"), "outside the root");
        Factory = new WebApplicationFactory<Program>().WithWebHostBuilder(b => b
            .UseSetting("Multimodal:ApiKeys:0", Key)
            .UseSetting("Multimodal:AllowFileUrls", "true")
            .UseSetting("Multimodal:FileUrlRoot", Path.Combine(Files.Path, "root"))
            .UseSetting("Multimodal:CorsOrigins:0", AllowedOrigin));
        var client = Factory.CreateClient();
        client.DefaultRequestHeaders.Authorization = new("Bearer", Key);
        await ServerFixture.WaitReady(client);
    }

    public Task DisposeAsync()
    {
        Factory.Dispose();
        Files.Dispose();
        return Task.CompletedTask;
    }
}

/// <summary>Issue 19's hostile-client checks: keys, content types, UTF-8, error shapes, CORS, file URLs, image and text
/// bounds answered in milliseconds, and a first call with no max_tokens that works.</summary>
[Collection(TimedCollection.Name)]
public sealed class ServerHardeningTests(ServerFixture open, KeyedServerFixture keyed, ITestOutputHelper output)
    : IClassFixture<ServerFixture>, IClassFixture<KeyedServerFixture>
{
    private static string Chat(string content, string extra = "") =>
        "{\"model\":\"blip2-shapes\"" + extra + ",\"messages\":[{\"role\":\"user\",\"content\":" + content + "}]}";

    private static string ImagePart(string url) => "{\"type\":\"image_url\",\"image_url\":{\"url\":\"" + url + "\"}}";

    private static string TextPart(string text) => "{\"type\":\"text\",\"text\":" + JsonValue.Create(text).ToJsonString() + "}";

    private static async Task<(int Status, JsonNode? Body)> Send(HttpClient client, HttpRequestMessage request)
    {
        var response = await client.SendAsync(request);
        string text = await response.Content.ReadAsStringAsync();
        return ((int)response.StatusCode, text.Length == 0 ? null : JsonNode.Parse(text));
    }

    private static HttpRequestMessage Post(string body, string? contentType = "application/json", string? key = null)
    {
        var request = new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions") { Content = new ByteArrayContent(Encoding.UTF8.GetBytes(body)) };
        if (contentType is not null) request.Content.Headers.ContentType = System.Net.Http.Headers.MediaTypeHeaderValue.Parse(contentType);
        if (key is not null) request.Headers.Authorization = new("Bearer", key);
        return request;
    }

    private ChatClient OpenAiChat(string key) => new("blip2-shapes", new ApiKeyCredential(key), new OpenAIClientOptions
    {
        Endpoint = new Uri(keyed.Factory.Server.BaseAddress, "/v1"),
        Transport = new HttpClientPipelineTransport(keyed.Factory.CreateClient()),
    });

    [Fact]
    public async Task With_a_key_set_the_OpenAI_clients_get_200_with_it_and_401_without_it()
    {
        var image = ChatMessageContentPart.CreateImagePart(BinaryData.FromBytes(File.ReadAllBytes(Repo.Scene1)), "image/png");
        var completion = await OpenAiChat(KeyedServerFixture.Key).CompleteChatAsync([new UserChatMessage(image)]);
        Assert.Equal(open.Scene1Caption, completion.Value.Content[0].Text);
        var wrong = await Assert.ThrowsAsync<ClientResultException>(() => OpenAiChat("sk-wrong").CompleteChatAsync([new UserChatMessage(image)]));
        Assert.Equal(401, wrong.Status);
        output.WriteLine(wrong.Message);

        var messages = new[] { new ChatMessage(ChatRole.User, [new DataContent(File.ReadAllBytes(Repo.Scene1), "image/png")]) };
        Assert.Equal(open.Scene1Caption, (await OpenAiChat(KeyedServerFixture.Key).AsIChatClient().GetResponseAsync(messages)).Text);
        var refused = await Assert.ThrowsAsync<ClientResultException>(() => OpenAiChat(KeyedServerFixture.Key + "x").AsIChatClient().GetResponseAsync(messages));
        Assert.Equal(401, refused.Status);

        var client = keyed.Factory.CreateClient();
        var (status, body) = await Send(client, Post(Chat("\"hi\"")));
        Assert.Equal(401, status);
        Assert.Equal("invalid_api_key", (string?)body!["error"]!["code"]);
        Assert.Equal(401, (int)(await client.GetAsync("/v1/models")).StatusCode);
        // Probes and the scrape stay open; the key itself is never echoed.
        Assert.Equal("ok", await client.GetStringAsync("/healthz"));
        Assert.Equal("ready", await client.GetStringAsync("/readyz"));
        Assert.DoesNotContain(KeyedServerFixture.Key, await client.GetStringAsync("/metrics"));
    }

    public static TheoryData<string, string?, string, int, string> ProtocolCases() => new()
    {
        { "text/plain", "text/plain", Chat("\"hi\""), 415, "unsupported_media_type" },
        { "no content type", null, Chat("\"hi\""), 415, "unsupported_media_type" },
        { "form", "application/x-www-form-urlencoded", "model=blip2-shapes", 415, "unsupported_media_type" },
        { "JSON in Latin-1", "application/json; charset=iso-8859-1", Chat("\"hi\""), 415, "unsupported_media_type" },
        { "invalid UTF-8", "application/json", "INVALID_UTF8", 400, "invalid_utf8" },
    };

    [Theory]
    [MemberData(nameof(ProtocolCases))]
    public async Task Bodies_that_are_not_UTF8_JSON_are_refused_in_OpenAIs_error_shape(string what, string? contentType, string body, int expected, string code)
    {
        var request = Post(body, contentType);
        if (body == "INVALID_UTF8")
            request.Content = new ByteArrayContent([.. """{"model":"blip2-shapes","messages":[{"role":"user","content":"caf"""u8, 0xC3, 0x28, .. "\"}]}"u8])
            {
                Headers = { ContentType = new("application/json") },
            };
        var (status, json) = await Send(open.Factory.CreateClient(), request);
        output.WriteLine($"{what}: {status} {json?.ToJsonString()}");
        Assert.Equal(expected, status);
        Assert.Equal(code, (string?)json!["error"]!["code"]);
    }

    [Fact]
    public async Task Unknown_routes_and_wrong_methods_answer_in_OpenAIs_error_shape()
    {
        var client = open.Factory.CreateClient();
        foreach (var (request, expected) in new[]
                 {
                     (new HttpRequestMessage(HttpMethod.Get, "/v1/chat/completions"), 405),
                     (new HttpRequestMessage(HttpMethod.Delete, "/v1/models"), 405),
                     (new HttpRequestMessage(HttpMethod.Get, "/v1/no-such-route"), 404),
                 })
        {
            var (status, body) = await Send(client, request);
            output.WriteLine($"{request.Method} {request.RequestUri}: {status} {body?.ToJsonString()}");
            Assert.Equal(expected, status);
            Assert.False(string.IsNullOrEmpty((string?)body!["error"]!["message"]));
            Assert.Equal("invalid_request_error", (string?)body["error"]!["type"]);
        }
    }

    [Fact]
    public async Task CORS_is_off_by_default_and_allows_only_the_configured_origin()
    {
        async Task<string?> AllowedOrigin(HttpClient client, string origin)
        {
            var preflight = new HttpRequestMessage(HttpMethod.Options, "/v1/chat/completions");
            preflight.Headers.Add("Origin", origin);
            preflight.Headers.Add("Access-Control-Request-Method", "POST");
            preflight.Headers.Add("Access-Control-Request-Headers", "authorization,content-type");
            var response = await client.SendAsync(preflight);
            return response.Headers.TryGetValues("Access-Control-Allow-Origin", out var values) ? values.Single() : null;
        }
        Assert.Null(await AllowedOrigin(open.Factory.CreateClient(), "http://evil.example"));
        Assert.Null(await AllowedOrigin(keyed.Factory.CreateClient(), "http://evil.example"));
        Assert.Equal(KeyedServerFixture.AllowedOrigin, await AllowedOrigin(keyed.Factory.CreateClient(), KeyedServerFixture.AllowedOrigin));
    }

    [Fact]
    public async Task File_URLs_read_regular_files_under_the_root_and_nothing_else_with_one_message()
    {
        string root = Path.Combine(keyed.Files.Path, "root");
        File.CreateSymbolicLink(Path.Combine(root, "link-out.png"), Path.Combine(keyed.Files.Path, "secret.txt"));
        Directory.CreateDirectory(Path.Combine(root, "folder.png"));
        Assert.Equal(0, Repo.Run("mkfifo", [Path.Combine(root, "fifo.png")], root, TimeSpan.FromSeconds(10)).ExitCode);
        var client = keyed.Factory.CreateClient();
        var (status, body) = await Send(client, Post(Chat("[" + ImagePart(new Uri(Path.Combine(root, "scene1.png")).AbsoluteUri) + "]"), key: KeyedServerFixture.Key));
        Assert.Equal(200, status);
        Assert.Equal(open.Scene1Caption, (string?)body!["choices"]![0]!["message"]!["content"]);
        string[] refused =
        [
            Path.Combine(root, "..", "secret.txt"), Path.Combine(root, "link-out.png"), Path.Combine(root, "folder.png"),
            Path.Combine(root, "fifo.png"), Path.Combine(root, "missing.png"), "/etc/shadow", "/dev/zero", "/proc/self/environ",
        ];
        foreach (var path in refused)
        {
            var clock = Stopwatch.StartNew();
            var (s, b) = await Send(client, Post(Chat("[" + ImagePart("file://" + path) + "]"), key: KeyedServerFixture.Key));
            output.WriteLine($"{path}: {s} in {clock.Elapsed.TotalMilliseconds:F0} ms: {(string?)b!["error"]!["message"]}");
            Assert.Equal(400, s);
            Assert.Equal(Multimodal.Server.FileUrls.Refusal, (string?)b["error"]!["message"]);
            Assert.True(clock.Elapsed < TimeSpan.FromSeconds(5));
        }
    }

    [Fact]
    public async Task A_question_with_no_max_tokens_is_answered_and_a_max_tokens_that_cannot_fit_names_the_largest()
    {
        var client = open.Factory.CreateClient();
        string question = Chat("[" + ImagePart(ServerFixture.Scene1DataUri) + "," + TextPart("what is on the left?") + "]");
        var (status, body) = await Send(client, Post(question));
        output.WriteLine(body!.ToJsonString()[..Math.Min(400, body.ToJsonString().Length)]);
        Assert.Equal(200, status);
        Assert.Contains((string?)body["choices"]![0]!["finish_reason"], new[] { "stop", "length" });

        (status, body) = await Send(client, Post(Chat("[" + ImagePart(ServerFixture.Scene1DataUri) + "," + TextPart("what is on the left?") + "]", ",\"max_tokens\":256")));
        output.WriteLine(body!.ToJsonString());
        Assert.Equal(400, status);
        Assert.Equal("max_tokens", (string?)body["error"]!["param"]);
        Assert.Equal("context_length_exceeded", (string?)body["error"]!["code"]);
        Assert.Matches(@"room for \d+ new tokens", (string?)body["error"]!["message"]);

        (status, body) = await Send(client, Post(Chat("[" + ImagePart(ServerFixture.Scene1DataUri) + "," + TextPart("what is on the left?") + "]", ",\"max_completion_tokens\":200")));
        Assert.Equal("max_completion_tokens", (string?)body!["error"]!["param"]);

        var models = JsonNode.Parse(await client.GetStringAsync("/v1/models"))!;
        Assert.Equal(64, (int)models["data"]![0]!["max_model_len"]!);
    }

    [Fact]
    public async Task A_decompression_bomb_and_a_4_MB_text_are_refused_in_milliseconds()
    {
        var client = open.Factory.CreateClient();
        byte[] bomb = HostileImages.ZeroPng(9400, 9400);
        var clock = Stopwatch.StartNew();
        var (status, body) = await Send(client, Post(Chat("[" + ImagePart("data:image/png;base64," + Convert.ToBase64String(bomb)) + "]")));
        output.WriteLine($"9400x9400 zero PNG ({bomb.Length} bytes): {status} in {clock.Elapsed.TotalMilliseconds:F0} ms: {body!.ToJsonString()}");
        Assert.Equal(400, status);
        Assert.Equal("invalid_image", (string?)body["error"]!["code"]);
        Assert.Contains("Multimodal:MaxImagePixels", (string?)body["error"]!["message"]);
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(1));

        clock.Restart();
        (status, body) = await Send(client, Post(Chat("[" + ImagePart(ServerFixture.Scene1DataUri) + "," + TextPart(new string('a', 4 << 20)) + "]")));
        output.WriteLine($"4 MB text: {status} in {clock.Elapsed.TotalMilliseconds:F0} ms: {body!.ToJsonString()}");
        Assert.Equal(400, status);
        Assert.Contains("bytes of text", (string?)body["error"]!["message"]);
        Assert.True(clock.Elapsed < TimeSpan.FromMilliseconds(500), $"{clock.Elapsed.TotalMilliseconds:F0} ms");

        (status, body) = await Send(client, Post(Chat("[" + string.Join(",", Enumerable.Repeat(ImagePart(ServerFixture.Scene1DataUri), 9)) + "]")));
        Assert.Equal(400, status);
        Assert.Equal("too_many_images", (string?)body!["error"]!["code"]);
    }

    [Fact]
    public void The_memory_budget_refuses_what_does_not_fit_now_and_what_never_fits()
    {
        var budget = new Multimodal.Server.RequestBudget();
        budget.SetCapacity(100);
        using (budget.Reserve(60, "a"))
        {
            var busy = Assert.Throws<Multimodal.Server.OpenAiException>(() => budget.Reserve(50, "b"));
            Assert.Equal(429, busy.Status);
            using (budget.Reserve(40, "c")) Assert.Equal(100, budget.InUse);
        }
        Assert.Equal(0, budget.InUse);
        Assert.Equal(413, Assert.Throws<Multimodal.Server.OpenAiException>(() => budget.Reserve(101, "d")).Status);
        var lease = budget.Reserve(100, "e");
        lease.Dispose();
        lease.Dispose();                       // a second release gives nothing back twice
        Assert.Equal(0, budget.InUse);
    }
}
