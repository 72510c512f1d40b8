using System.Net;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Xunit.Abstractions;

namespace Multimodal.Tests.Server;

/// <summary>The OpenAI-compatible endpoints in process: answers equal the library's, streams concatenate to the
/// same text in OpenAI's chunk format, and every bad request gets its status and an OpenAI-style error body.</summary>
public sealed class ServerProtocolTests(ServerFixture server, ITestOutputHelper output) : IClassFixture<ServerFixture>
{
    private static string ImageRequest(string extra = "", string? url = null, string model = "blip2-shapes") =>
        "{\"model\":\"" + model + "\"" + extra + ",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\",\"image_url\":{\"url\":\""
        + (url ?? ServerFixture.Scene1DataUri) + "\"}}]}]}";

    private async Task<(HttpStatusCode Status, string Body, HttpResponseMessage Response)> Post(string body)
    {
        var client = server.Factory.CreateClient();
        var response = await client.PostAsync("/v1/chat/completions", new StringContent(body, Encoding.UTF8, "application/json"));
        return (response.StatusCode, await response.Content.ReadAsStringAsync(), response);
    }

    [Fact]
    public async Task Models_health_and_readiness_answer()
    {
        var client = server.Factory.CreateClient();
        Assert.Equal("ok", await client.GetStringAsync("/healthz"));
        Assert.Equal("ready", await client.GetStringAsync("/readyz"));
        var models = JsonNode.Parse(await client.GetStringAsync("/v1/models"))!;
        Assert.Equal("list", (string?)models["object"]);
        Assert.Equal("blip2-shapes", (string?)models["data"]![0]!["id"]);
    }

    [Fact]
    public async Task A_chat_completion_with_an_image_is_the_librarys_caption()
    {
        var (status, body, _) = await Post(ImageRequest());
        output.WriteLine(body);
        Assert.Equal(HttpStatusCode.OK, status);
        var json = JsonNode.Parse(body)!;
        Assert.Equal("chat.completion", (string?)json["object"]);
        Assert.Equal(server.Scene1Caption, (string?)json["choices"]![0]!["message"]!["content"]);
        Assert.Equal("stop", (string?)json["choices"]![0]!["finish_reason"]);
        Assert.Equal(9, (int)json["usage"]!["prompt_tokens"]!);                   // 8 queries + BOS
        Assert.True((int)json["usage"]!["completion_tokens"]! > 0);

        var (_, cut, _) = await Post(ImageRequest(""","max_tokens":3"""));
        Assert.Equal("length", (string?)JsonNode.Parse(cut)!["choices"]![0]!["finish_reason"]);
        Assert.Equal(3, (int)JsonNode.Parse(cut)!["usage"]!["completion_tokens"]!);
    }

    [Fact]
    public async Task A_stream_is_OpenAI_chunks_that_concatenate_to_the_caption_and_end_with_DONE()
    {
        var (status, body, response) = await Post(ImageRequest(""","stream":true,"stream_options":{"include_usage":true}"""));
        Assert.Equal(HttpStatusCode.OK, status);
        Assert.Equal("text/event-stream", response.Content.Headers.ContentType!.MediaType);
        var events = body.Split("\n\n", StringSplitOptions.RemoveEmptyEntries).ToList();
        Assert.All(events, e => Assert.StartsWith("data: ", e));
        Assert.Equal("data: [DONE]", events[^1]);
        var chunks = events.SkipLast(1).Select(e => JsonNode.Parse(e["data: ".Length..])!).ToList();
        Assert.All(chunks, c => Assert.Equal("chat.completion.chunk", (string?)c["object"]));
        Assert.Single(chunks.Select(c => (string?)c["id"]).Distinct());
        string text = string.Concat(chunks.Where(c => c["choices"]!.AsArray().Count > 0).Select(c => (string?)c["choices"]![0]!["delta"]!["content"] ?? ""));
        output.WriteLine($"{chunks.Count} chunks: \"{text}\"");
        Assert.Equal(server.Scene1Caption, text);
        Assert.Equal("assistant", (string?)chunks[0]["choices"]![0]!["delta"]!["role"]);
        Assert.Equal("stop", (string?)chunks[^2]["choices"]![0]!["finish_reason"]);
        Assert.Equal(9, (int)chunks[^1]["usage"]!["prompt_tokens"]!);
    }

    [Fact]
    public async Task Metrics_count_each_request_by_model_and_status_with_its_tokens_latency_and_batch()
    {
        var client = server.Factory.CreateClient();
        var before = await Scrape(client);
        var (status, body, _) = await Post(ImageRequest());
        Assert.Equal(HttpStatusCode.OK, status);
        long tokens = (long)JsonNode.Parse(body)!["usage"]!["completion_tokens"]!;
        Assert.Equal(HttpStatusCode.NotFound, (await Post(ImageRequest(model: "nope"))).Status);
        Assert.Equal(HttpStatusCode.BadRequest, (await Post(ImageRequest(""","max_tokens":"ten" """))).Status);
        var after = await Scrape(client);
        output.WriteLine(string.Join("\n", after.Where(p => p.Key.StartsWith("multimodal_")).Select(p => $"{p.Key} {p.Value}")));

        // The scrape names counters with their unit (_total) and labels them as recorded; OpenTelemetry's exporter
        // adds otel_scope labels, so a series is found by name and its own labels.
        double Sum(Dictionary<string, double> scrape, string name, params string[] labels) =>
            scrape.Where(p => p.Key.StartsWith(name + "{", StringComparison.Ordinal) && labels.All(l => p.Key.Contains(l, StringComparison.Ordinal))).Sum(p => p.Value);
        double Change(string name, params string[] labels) => Sum(after, name, labels) - Sum(before, name, labels);

        Assert.Equal(1, Change("multimodal_server_requests_total", "model=\"blip2-shapes\"", "status=\"200\""));
        Assert.Equal(1, Change("multimodal_server_requests_total", "model=\"\"", "status=\"404\""));   // no series per made-up name
        Assert.Equal(1, Change("multimodal_server_requests_total", "model=\"blip2-shapes\"", "status=\"400\""));
        Assert.Equal(3, Change("multimodal_server_requests_total"));
        Assert.Equal(tokens, Change("multimodal_server_tokens_total", "model=\"blip2-shapes\""));
        Assert.Equal(1, Change("multimodal_server_request_duration_seconds_count", "model=\"blip2-shapes\"", "status=\"200\""));
        Assert.True(Change("multimodal_server_request_duration_seconds_sum", "status=\"200\"") > 0);
        Assert.Equal(1, Change("multimodal_batch_size_count"));                  // one generative batch ran, of one row
        Assert.Equal(1, Change("multimodal_batch_size_sum"));
        Assert.Equal(0, Sum(after, "multimodal_server_queue_depth", "model=\"blip2-shapes\""));
        Assert.Contains(after.Keys, k => k.StartsWith("http_server_request_duration_seconds_count{", StringComparison.Ordinal));
        // In process the gauge counts every test's tensors; KestrelServerTests checks it stays flat in a server of its own.
        Assert.True(Sum(after, "multimodal_server_live_tensors") > 0);
    }

    /// <summary>One Prometheus scrape as series → value, read once the exporter's cached scrape has moved on.</summary>
    private static async Task<Dictionary<string, double>> Scrape(HttpClient client)
    {
        await Task.Delay(1500);
        var series = new Dictionary<string, double>();
        foreach (var line in (await client.GetStringAsync("/metrics")).Split('\n'))
        {
            if (line.Length == 0 || line[0] == '#') continue;
            int space = line.LastIndexOf(' ');
            string key = line[..space];
            // A sample may carry a timestamp after its value.
            if (!double.TryParse(line[(space + 1)..], System.Globalization.CultureInfo.InvariantCulture, out double value) || key.Contains('}') && !key.EndsWith('}'))
            {
                int valueEnd = space;
                space = line.LastIndexOf(' ', valueEnd - 1);
                key = line[..space];
                value = double.Parse(line[(space + 1)..valueEnd], System.Globalization.CultureInfo.InvariantCulture);
            }
            series[key] = value;
        }
        return series;
    }

    public static TheoryData<string, string, int, string?, string?> BadRequests() => new()
    {
        { "malformed JSON", "{\"model\": ", 400, null, "invalid_json" },
        { "not an object", "[1, 2]", 400, null, null },
        { "no model", """{"messages":[{"role":"user","content":"hi"}]}""", 400, "model", null },
        { "no messages", """{"model":"blip2-shapes"}""", 400, "messages", null },
        { "empty messages", """{"model":"blip2-shapes","messages":[]}""", 400, "messages", null },
        { "n = 2", ImageRequest(""","n":2"""), 400, "n", "unsupported_parameter" },
        { "tools", ImageRequest(""","tools":[{"type":"function","function":{"name":"f"}}]"""), 400, "tools", "unsupported_parameter" },
        { "max_tokens over the cap", ImageRequest(""","max_tokens":100000"""), 400, "max_tokens", null },
        { "max_tokens not a number", ImageRequest(""","max_tokens":"ten" """), 400, "max_tokens", null },
        { "temperature out of range", ImageRequest(""","temperature":7"""), 400, "temperature", null },
        { "stop of the wrong type", ImageRequest(""","stop":5"""), 400, "stop", null },
        { "unknown role", """{"model":"blip2-shapes","messages":[{"role":"robot","content":"hi"}]}""", 400, "messages[0].role", null },
        { "unknown part type", """{"model":"blip2-shapes","messages":[{"role":"user","content":[{"type":"audio"}]}]}""", 400, "messages[0].content[0].type", null },
        { "http image URL", ImageRequest(url: "http://example.com/a.png"), 400, "messages[0].content[0].image_url.url", "invalid_image_url" },
        { "file image URL", ImageRequest(url: "file:///etc/passwd"), 400, "messages[0].content[0].image_url.url", "invalid_image_url" },
        { "bad base64", ImageRequest(url: "data:image/png;base64,@@@@"), 400, "messages[0].content[0].image_url.url", "invalid_image_url" },
        { "unsupported media type", ImageRequest(url: "data:image/tiff;base64,AAAA"), 400, "messages[0].content[0].image_url.url", "invalid_image_url" },
        { "bytes that are no image", ImageRequest(url: "data:image/png;base64," + Convert.ToBase64String(Encoding.UTF8.GetBytes("not an image at all"))), 400, null, "invalid_image" },
        { "unknown model", ImageRequest(model: "gpt-4o"), 404, "model", "model_not_found" },
        { "two images for BLIP-2", """{"model":"blip2-shapes","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"IMG"}},{"type":"image_url","image_url":{"url":"IMG"}}]}]}""".Replace("IMG", ServerFixture.Scene1DataUri), 400, null, null },
    };

    [Theory]
    [MemberData(nameof(BadRequests))]
    public async Task A_bad_request_gets_its_status_and_an_OpenAI_error_body(string what, string body, int status, string? param, string? code)
    {
        var (actual, text, _) = await Post(body);
        output.WriteLine($"{what}: {(int)actual} {text}");
        Assert.Equal(status, (int)actual);
        var error = JsonNode.Parse(text)!["error"]!;
        Assert.False(string.IsNullOrWhiteSpace((string?)error["message"]));
        Assert.NotNull((string?)error["type"]);
        Assert.Equal(param, (string?)error["param"]);
        if (code is not null) Assert.Equal(code, (string?)error["code"]);
    }
}
