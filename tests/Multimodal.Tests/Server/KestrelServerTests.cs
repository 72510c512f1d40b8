using System.ClientModel;
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.Json.Nodes;
using Microsoft.Extensions.AI;
using Multimodal.Blip2;
using Multimodal.Tests.TestSupport;
using OpenAI;
using OpenAI.Chat;
using Xunit.Abstractions;
using ChatMessage = Microsoft.Extensions.AI.ChatMessage;

namespace Multimodal.Tests.Server;

/// <summary>The built server as its own process on a loopback port (Kestrel, so its body limit applies), with a
/// small queue (Multimodal:MaxQueue = 2) and body limit (2 MB).</summary>
public class KestrelServer : IAsyncLifetime
{
    private Process? _process;
    private readonly StringBuilder _log = new();

    public int Port { get; private set; }
    public Uri BaseUri => new($"http://127.0.0.1:{Port}");
    public string Scene1Caption { get; private set; } = "";
    public int ProcessId => _process!.Id;
    public string Log { get { lock (_log) return _log.ToString(); } }

    public static string ServerDll =>
        Directory.EnumerateFiles(Path.Combine(Repo.Root, "src", "Multimodal.Server", "bin"), "Multimodal.Server.dll", SearchOption.AllDirectories)
            .Where(p => p.Contains("net10.0")).OrderByDescending(File.GetLastWriteTimeUtc).First();

    /// <summary>Arguments added to the server's command line (configuration overrides).</summary>
    protected List<string> ExtraArguments { get; } = [];

    public virtual async Task InitializeAsync()
    {
        using (var captioner = Blip2Captioner.FromPretrained(Repo.ShapesModel))
            Scene1Caption = (await captioner.CaptionAsync(Repo.Scene1)).Text;
        await StartAsync();
    }

    /// <summary>Starts the server process and waits until it is ready.</summary>
    public async Task StartAsync()
    {
        using (var probe = new TcpListener(IPAddress.Loopback, 0))
        {
            probe.Start();
            Port = ((IPEndPoint)probe.LocalEndpoint).Port;
        }
        var start = new ProcessStartInfo(Repo.Dotnet)
        {
            WorkingDirectory = Repo.Root,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        foreach (var a in new[] { ServerDll, "--urls", BaseUri.ToString(), "--Multimodal:MaxQueue", "2", "--Multimodal:MaxRequestBodyBytes", "2000000" }.Concat(ExtraArguments))
            start.ArgumentList.Add(a);
        _process = Process.Start(start)!;
        _process.OutputDataReceived += (_, e) => { lock (_log) _log.AppendLine(e.Data); };
        _process.ErrorDataReceived += (_, e) => { lock (_log) _log.AppendLine(e.Data); };
        _process.BeginOutputReadLine();
        _process.BeginErrorReadLine();
        using var client = new HttpClient { BaseAddress = BaseUri };
        for (int i = 0; i < 600; i++)
        {
            try
            {
                if ((await client.GetAsync("/readyz")).IsSuccessStatusCode) return;
            }
            catch (HttpRequestException) { }
            if (_process.HasExited) throw new InvalidOperationException("the server exited: " + Log);
            await Task.Delay(100);
        }
        throw new TimeoutException("the server did not become ready in 60 s: " + Log);
    }

    public bool WaitForExit(TimeSpan timeout) => _process!.WaitForExit(timeout);

    public int ExitCode => _process!.ExitCode;

    public virtual Task DisposeAsync()
    {
        if (_process is { HasExited: false }) _process.Kill(entireProcessTree: true);
        _process?.Dispose();
        return Task.CompletedTask;
    }
}

/// <summary>The server driven by the official OpenAI .NET client and by Microsoft.Extensions.AI.OpenAI's
/// IChatClient, its Kestrel body limit, and a bounded load test.</summary>
public sealed class KestrelServerTests(KestrelServer server, ITestOutputHelper output) : IClassFixture<KestrelServer>
{
    private static readonly byte[] Scene1 = File.ReadAllBytes(Repo.Scene1);

    private ChatClient OpenAiChat() =>
        new("blip2-shapes", new ApiKeyCredential("not-used"), new OpenAIClientOptions { Endpoint = new Uri(server.BaseUri, "/v1") });

    [Fact]
    public async Task The_OpenAI_client_gets_the_caption_and_streams_it()
    {
        var message = new UserChatMessage(ChatMessageContentPart.CreateImagePart(BinaryData.FromBytes(Scene1), "image/png"));
        ChatCompletion completion = await OpenAiChat().CompleteChatAsync([message]);
        output.WriteLine($"\"{completion.Content[0].Text}\" {completion.FinishReason} {completion.Usage.InputTokenCount}+{completion.Usage.OutputTokenCount}");
        Assert.Equal(server.Scene1Caption, completion.Content[0].Text);
        Assert.Equal(OpenAI.Chat.ChatFinishReason.Stop, completion.FinishReason);
        Assert.Equal(9, completion.Usage.InputTokenCount);

        var streamed = new StringBuilder();
        await foreach (var update in OpenAiChat().CompleteChatStreamingAsync([message]))
            foreach (var part in update.ContentUpdate) streamed.Append(part.Text);
        Assert.Equal(server.Scene1Caption, streamed.ToString());

        var refused = await Assert.ThrowsAsync<ClientResultException>(() =>
            new ChatClient("no-such-model", new ApiKeyCredential("x"), new OpenAIClientOptions { Endpoint = new Uri(server.BaseUri, "/v1") })
                .CompleteChatAsync([message]));
        Assert.Equal(404, refused.Status);
    }

    [Fact]
    public async Task Microsoft_Extensions_AI_OpenAI_IChatClient_gets_the_caption()
    {
        IChatClient chat = OpenAiChat().AsIChatClient();
        var messages = new[] { new ChatMessage(ChatRole.User, [new DataContent(Scene1, "image/png")]) };
        var response = await chat.GetResponseAsync(messages);
        Assert.Equal(server.Scene1Caption, response.Text);
        Assert.Equal(Microsoft.Extensions.AI.ChatFinishReason.Stop, response.FinishReason);
        var streamed = new StringBuilder();
        await foreach (var update in chat.GetStreamingResponseAsync(messages)) streamed.Append(update.Text);
        Assert.Equal(server.Scene1Caption, streamed.ToString());
    }

    [Fact]
    public async Task A_body_over_the_limit_gets_413_in_OpenAIs_error_shape()
    {
        using var client = new HttpClient { BaseAddress = server.BaseUri };
        string huge = "{\"model\":\"blip2-shapes\",\"messages\":[{\"role\":\"user\",\"content\":\"" + new string('a', 3_000_000) + "\"}]}";
        // The server answers 413 from the declared length, before reading the body; without "Expect: 100-continue" the
        // client may still be writing the 3 MB when the server closes, and fails with a broken pipe instead of reading
        // the answer (seen once in a full run).
        using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions") { Content = new StringContent(huge, Encoding.UTF8, "application/json") };
        request.Headers.ExpectContinue = true;
        var response = await client.SendAsync(request);
        string body = await response.Content.ReadAsStringAsync();
        output.WriteLine($"{(int)response.StatusCode} {body}");
        Assert.Equal(HttpStatusCode.RequestEntityTooLarge, response.StatusCode);
        Assert.Equal("request_too_large", (string?)JsonNode.Parse(body)!["error"]!["code"]);
    }

    [Fact]
    public async Task Load_test_200_requests_from_16_clients_a_quarter_malformed_loses_nothing()
    {
        using var client = new HttpClient { BaseAddress = server.BaseUri, Timeout = TimeSpan.FromSeconds(60) };
        string good = "{\"model\":\"blip2-shapes\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\",\"image_url\":{\"url\":\"data:image/png;base64,"
            + Convert.ToBase64String(Scene1) + "\"}}]}]}";
        string[] malformed = ["{\"model\": ", "{\"model\":\"blip2-shapes\",\"n\":3,\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}",
            good.Replace("base64,", "base64,@@"), good.Replace("\"model\":\"blip2-shapes\"", "\"model\":\"nope\"")];
        // Warm-up at the test's concurrency, so Kestrel's and the thread pool's working sets are in the baseline.
        await Task.WhenAll(Enumerable.Range(0, 16).Select(_ =>
            client.PostAsync("/v1/chat/completions", new StringContent(good, Encoding.UTF8, "application/json"))));

        // Three rounds: the first settles the heap and the allocator's arenas; the two after it must not grow.
        var rss = new List<long>();
        var tensors = new List<long>();
        int totalRejected = 0;
        for (int round = 0; round < 3; round++)
        {
            int next = -1, rejected = 0;
            var outcomes = new System.Collections.Concurrent.ConcurrentBag<(bool Malformed, int Status, bool Correct)>();
            var clock = Stopwatch.StartNew();
            await Task.WhenAll(Enumerable.Range(0, 16).Select(async _ =>
            {
                for (int i; (i = Interlocked.Increment(ref next)) < 200;)
                {
                    bool bad = i % 4 == 3;
                    HttpResponseMessage response;
                    // A full queue answers 429 with Retry-After; the client retries (sooner than it asks, to keep the
                    // test short), so every good request must end in its caption.
                    for (int attempt = 0; ; attempt++)
                    {
                        response = await client.PostAsync("/v1/chat/completions",
                            new StringContent(bad ? malformed[i / 4 % malformed.Length] : good, Encoding.UTF8, "application/json"));
                        if (response.StatusCode != HttpStatusCode.TooManyRequests || attempt == 2000) break;
                        Assert.NotNull(response.Headers.RetryAfter);
                        Interlocked.Increment(ref rejected);
                        await Task.Delay(20);
                    }
                    string body = await response.Content.ReadAsStringAsync();
                    bool correct = response.StatusCode == HttpStatusCode.OK
                        && (string?)JsonNode.Parse(body)!["choices"]![0]!["message"]!["content"] == server.Scene1Caption;
                    outcomes.Add((bad, (int)response.StatusCode, correct));
                }
            }));
            rss.Add(Rss(server.ProcessId));
            tensors.Add(await LiveTensors(client));
            totalRejected += rejected;
            var all = outcomes.ToList();
            int ok = all.Count(o => o.Status == 200), client4xx = all.Count(o => o.Malformed && o.Status is 400 or 404);
            output.WriteLine($"round {round + 1}: {all.Count} answers in {clock.Elapsed.TotalSeconds:F1} s: {ok} × 200 (after {rejected} × 429 retried), " +
                             $"{client4xx} malformed → 4xx, {all.Count(o => o.Status >= 500)} × 5xx; server RSS {rss[^1] / 1e6:F0} MB, live tensors {tensors[^1]}");
            Assert.Equal(200, all.Count);                                                   // nothing lost
            Assert.DoesNotContain(all, o => o.Status >= 500);
            Assert.All(all.Where(o => o.Malformed), o => Assert.True(o.Status is 400 or 404, $"malformed got {o.Status}"));
            Assert.All(all.Where(o => !o.Malformed), o => Assert.True(o.Correct, $"good request got {o.Status}"));
            Assert.Equal(150, ok);
        }
        Assert.True((await client.GetAsync("/healthz")).IsSuccessStatusCode);
        // 16 clients against a queue of fewer slots: the admission limit was reached and answered with 429.
        Assert.True(totalRejected > 0, "no request was ever refused with 429: the queue limit was not exercised");
        // Rounds 2 and 3 answer 300 good requests after the first settled the heap: a leak of 0.1 MB a request would
        // show as 30 MB here (measured: within a few MB either way).
        Assert.True(rss[2] - rss[0] < 30_000_000, $"RSS grew by {(rss[2] - rss[0]) / 1e6:F0} MB over rounds 2 and 3");
        Assert.Equal(tensors[0], tensors[1]);
        Assert.Equal(tensors[0], tensors[2]);
    }

    [Fact]
    public async Task Clients_that_disconnect_mid_stream_free_their_slots_and_the_server_answers_on()
    {
        using var client = new HttpClient { BaseAddress = server.BaseUri };
        string body = "{\"model\":\"blip2-shapes\",\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\",\"image_url\":{\"url\":\"data:image/png;base64,"
            + Convert.ToBase64String(Scene1) + "\"}}]}]}";
        int abandoned = 0, refused = 0;
        while (abandoned < 20 && refused < 200)
        {
            using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions") { Content = new StringContent(body, Encoding.UTF8, "application/json") };
            using var response = await client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
            if (response.StatusCode == HttpStatusCode.TooManyRequests) { refused++; await Task.Delay(50); continue; }
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            using var stream = await response.Content.ReadAsStreamAsync();
            var first = new byte[64];
            int read = await stream.ReadAsync(first);                                 // the first chunk, then hang up
            Assert.True(read > 0);
            Assert.DoesNotContain("[DONE]", Encoding.UTF8.GetString(first, 0, read));  // mid-way, not after the answer
            abandoned++;
        }
        output.WriteLine($"{abandoned} streams abandoned after their first chunk ({refused} × 429 while slots were still held)");
        Assert.Equal(20, abandoned);
        // Every admission slot comes back: the queue-depth gauge returns to 0.
        string depth = "";
        for (int i = 0; i < 100; i++, await Task.Delay(100))
        {
            depth = (await client.GetStringAsync("/metrics")).Split('\n').FirstOrDefault(l => l.StartsWith("multimodal_server_queue_depth")) ?? "";
            if (depth.EndsWith(" 0")) break;
        }
        output.WriteLine(depth);
        Assert.EndsWith(" 0", depth);
        var completion = await OpenAiChat().CompleteChatAsync([new UserChatMessage(ChatMessageContentPart.CreateImagePart(BinaryData.FromBytes(Scene1), "image/png"))]);
        Assert.Equal(server.Scene1Caption, completion.Value.Content[0].Text);
        Assert.DoesNotContain("request failed", server.Log);
    }

    [Fact]
    public async Task Shutdown_lets_an_answer_in_flight_finish()
    {
        var own = new KestrelServer();
        await own.StartAsync();
        try
        {
            using var client = new HttpClient { BaseAddress = own.BaseUri };
            string body = "{\"model\":\"blip2-shapes\",\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\",\"image_url\":{\"url\":\"data:image/png;base64,"
                + Convert.ToBase64String(Scene1) + "\"}}]}]}";
            using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions") { Content = new StringContent(body, Encoding.UTF8, "application/json") };
            using var response = await client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
            using var reader = new StreamReader(await response.Content.ReadAsStreamAsync());
            string first = (await reader.ReadLineAsync())!;                           // the answer is under way
            Assert.StartsWith("data: ", first);
            using (var term = Process.Start("kill", ["-TERM", own.ProcessId.ToString()])) term.WaitForExit();
            string rest = await reader.ReadToEndAsync();
            output.WriteLine($"after SIGTERM: {rest.Split("\n\n", StringSplitOptions.RemoveEmptyEntries).Length} more events");
            Assert.EndsWith("data: [DONE]\n\n", rest);
            Assert.True(own.WaitForExit(TimeSpan.FromSeconds(30)), "the server did not stop after SIGTERM");
            Assert.Equal(0, own.ExitCode);
        }
        finally
        {
            await own.DisposeAsync();
        }
    }

    // The server's live-tensor gauge, read from /metrics once the exporter's cached scrape has moved on.
    private static async Task<long> LiveTensors(HttpClient client)
    {
        await Task.Delay(1500);
        string line = (await client.GetStringAsync("/metrics")).Split('\n').First(l => l.StartsWith("multimodal_server_live_tensors"));
        return long.Parse(line[(line.LastIndexOf(' ') + 1)..]);
    }

    private static long Rss(int pid)
    {
        foreach (var line in File.ReadLines($"/proc/{pid}/status"))
            if (line.StartsWith("VmRSS:")) return long.Parse(line.Split([' ', '\t'], StringSplitOptions.RemoveEmptyEntries)[1]) * 1024;
        return 0;
    }
}
