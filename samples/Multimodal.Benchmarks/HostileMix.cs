using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Http.Headers;
using System.Net.Sockets;
using System.Text;
using System.Text.Json.Nodes;
using SkiaSharp;

namespace Multimodal.Benchmarks;

/// <summary>The server under a hostile mix, on loopback, bounded in time: well-behaved clients caption the sample scenes
/// while others send decompression bombs (over the pixel limit and just under it), maximal texts, malformed JSON, slow
/// bodies, wrong keys, wrong content types and invalid UTF-8. Prints 5xx and crash counts, every good answer checked
/// against the caption its scene was drawn from, and peak and settled RSS as ratios to their limits: the server's
/// plateau plus its configured request budget, and the plateau plus 50 MB.</summary>
/// <remarks><c>--hostile-mix --seconds 60 --good 8 --hostile 2 --budget-mb 300</c>; the last line is JSON.</remarks>
internal static class HostileMix
{
    private const string Key = "sk-hostile-mix";

    public static JsonObject Run(Args options)
    {
        int seconds = int.Parse(options.Get("--seconds") ?? "60", CultureInfo.InvariantCulture);
        int goodClients = int.Parse(options.Get("--good") ?? "8", CultureInfo.InvariantCulture);
        int hostileClients = int.Parse(options.Get("--hostile") ?? "2", CultureInfo.InvariantCulture);
        int budgetMb = int.Parse(options.Get("--budget-mb") ?? "300", CultureInfo.InvariantCulture);
        string repo = Checkpoints.RepositoryRoot();
        var scenes = Scenes(repo);
        var attacks = Attacks();

        using var server = Server.Start(repo, budgetMb);
        using var client = new HttpClient { BaseAddress = server.BaseUri, Timeout = TimeSpan.FromSeconds(120) };
        client.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", Key);

        // Warm-up at the run's concurrency, every attack once, so working sets and JIT are in the plateau.
        Task.WaitAll(Enumerable.Range(0, goodClients).Select(i => Good(client, scenes[i % scenes.Count], DateTime.MaxValue)).ToArray());
        foreach (var attack in attacks) attack.Send(client, server).GetAwaiter().GetResult();
        Thread.Sleep(3000);
        long plateau = server.SettledRss();
        long limit = plateau + ((long)budgetMb << 20);
        Console.WriteLine($"server plateau {plateau / 1e6:F0} MB, request budget {budgetMb} MB: peak limit {limit / 1e6:F0} MB");

        long peak = 0;
        using var sampling = new CancellationTokenSource();
        var sampler = Task.Run(async () =>
        {
            while (!sampling.IsCancellationRequested)
            {
                peak = Math.Max(peak, server.Rss());
                await Task.Delay(25);
            }
        });
        var goodOutcomes = new ConcurrentBag<(bool Correct, int Retries, int Status)>();
        var hostileOutcomes = new ConcurrentBag<(string Kind, int Status)>();
        var deadline = DateTime.UtcNow.AddSeconds(seconds);
        var clock = Stopwatch.StartNew();
        var tasks = Enumerable.Range(0, goodClients).Select(c => Task.Run(async () =>
        {
            for (int i = c; DateTime.UtcNow < deadline; i += goodClients) goodOutcomes.Add(await Good(client, scenes[i % scenes.Count], deadline.AddSeconds(60)));
        })).Concat(Enumerable.Range(0, hostileClients).Select(c => Task.Run(async () =>
        {
            // Every attacker goes through every attack, each starting at its own place in the list.
            for (int k = 0; DateTime.UtcNow < deadline; k++)
            {
                var attack = attacks[(k + c * attacks.Count / hostileClients) % attacks.Count];
                hostileOutcomes.Add((attack.Kind, await attack.Send(client, server)));
            }
        }))).ToArray();
        Task.WaitAll(tasks);
        double elapsed = clock.Elapsed.TotalSeconds;
        sampling.Cancel();
        sampler.Wait();
        // RSS each half second while the server goes idle, then what it settles at.
        var after = new List<long>();
        for (int i = 0; i < 12; i++, Thread.Sleep(500)) after.Add(server.Rss());
        Console.WriteLine("RSS after the load (MB, every 0.5 s): " + string.Join(" ", after.Select(r => (r / 1e6).ToString("F0", CultureInfo.InvariantCulture))));
        long settled = server.SettledRss();
        Console.WriteLine("largest resident mappings: " + server.LargestMappings());
        bool crashed = server.HasExited;

        var good = goodOutcomes.ToList();
        var hostile = hostileOutcomes.ToList();
        int serverErrors = good.Count(g => g.Status >= 500) + hostile.Count(h => h.Status >= 500);
        var byKind = new JsonObject();
        foreach (var kind in hostile.GroupBy(h => h.Kind).OrderBy(g => g.Key))
            byKind[kind.Key] = new JsonObject(kind.GroupBy(h => h.Status).OrderBy(g => g.Key).Select(g => KeyValuePair.Create(g.Key.ToString(CultureInfo.InvariantCulture), (JsonNode?)g.Count())));
        Console.WriteLine($"{elapsed:F0} s: {good.Count} good requests, {good.Count(g => g.Correct)} correct captions ({good.Sum(g => g.Retries)} retries after 429), " +
                          $"{hostile.Count} hostile requests, {serverErrors} x 5xx, server {(crashed ? "CRASHED" : "alive")}");
        foreach (var (kind, statuses) in byKind) Console.WriteLine($"  {kind}: {statuses!.ToJsonString()}");
        Console.WriteLine($"RSS: plateau {plateau / 1e6:F0} MB, peak {peak / 1e6:F0} MB = {(double)peak / limit:F2}x the limit (plateau + budget), " +
                          $"settled {settled / 1e6:F0} MB = plateau {(settled - plateau) / 1e6:+0;-0} MB ({(settled - plateau) / 50e6:F2}x the 50 MB allowed)");
        return new JsonObject
        {
            ["seconds"] = elapsed, ["good"] = good.Count, ["good_correct"] = good.Count(g => g.Correct), ["retries_429"] = good.Sum(g => g.Retries),
            ["hostile"] = hostile.Count, ["hostile_by_kind"] = byKind, ["server_errors"] = serverErrors, ["crashed"] = crashed,
            ["plateau_mb"] = plateau / 1e6, ["peak_mb"] = peak / 1e6, ["budget_mb"] = budgetMb, ["peak_ratio"] = (double)peak / limit,
            ["settled_mb"] = settled / 1e6, ["settled_growth_mb"] = (settled - plateau) / 1e6,
        };
    }

    private sealed record Scene(string DataUri, string Caption);

    private static List<Scene> Scenes(string repo) =>
        File.ReadAllLines(Path.Combine(repo, "samples", "images", "CAPTIONS.md"))
            .Where(l => l.StartsWith("| `scene", StringComparison.Ordinal))
            .Select(l => l.Split('|', StringSplitOptions.TrimEntries))
            .Select(c => new Scene("data:image/png;base64," + Convert.ToBase64String(File.ReadAllBytes(Path.Combine(repo, "samples", "images", c[1].Trim('`')))), c[2]))
            .ToList();

    private static string ImageRequest(string dataUri) =>
        "{\"model\":\"blip2-shapes\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\",\"image_url\":{\"url\":\"" + dataUri + "\"}}]}]}";

    private static StringContent Json(string body) => new(body, Encoding.UTF8, "application/json");

    // A full queue or budget answers 429; a well-behaved client retries after a pause.
    private static async Task<(bool, int, int)> Good(HttpClient client, Scene scene, DateTime giveUp)
    {
        for (int retries = 0; ; retries++)
        {
            using var response = await client.PostAsync("/v1/chat/completions", Json(ImageRequest(scene.DataUri)));
            if (response.StatusCode == HttpStatusCode.TooManyRequests && DateTime.UtcNow < giveUp)
            {
                await Task.Delay(50);
                continue;
            }
            string body = await response.Content.ReadAsStringAsync();
            bool correct = response.IsSuccessStatusCode && (string?)JsonNode.Parse(body)?["choices"]?[0]?["message"]?["content"] == scene.Caption;
            return (correct, retries, (int)response.StatusCode);
        }
    }

    private sealed record Attack(string Kind, Func<HttpClient, Server, Task<int>> Send);

    private static List<Attack> Attacks()
    {
        string over = ImageRequest("data:image/png;base64," + Convert.ToBase64String(ZeroPng(9400, 9400)));
        string under = ImageRequest("data:image/png;base64," + Convert.ToBase64String(ZeroPng(3500, 3500)));
        string text = "{\"model\":\"blip2-shapes\",\"messages\":[{\"role\":\"user\",\"content\":\"" + new string('a', 19 << 20) + "\"}]}";
        // A persistent attacker: a 429 is retried (up to 20 times), so the bomb under the limit is decoded whenever
        // the budget has room for it, beside the good requests.
        async Task<int> Post(HttpClient client, Func<HttpContent> content, string? key = Key)
        {
            for (int attempt = 0; ; attempt++)
            {
                using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions") { Content = content() };
                request.Headers.Authorization = key is null ? null : new AuthenticationHeaderValue("Bearer", key);
                using var response = await client.SendAsync(request);
                if (response.StatusCode != HttpStatusCode.TooManyRequests || attempt == 20) return (int)response.StatusCode;
                await Task.Delay(50);
            }
        }
        return
        [
            new("bomb over the pixel limit (9400x9400 zero PNG)", (c, _) => Post(c, () => Json(over))),
            new("bomb just under it (3500x3500 zero PNG)", (c, _) => Post(c, () => Json(under))),
            new("19 MB text", (c, _) => Post(c, () => Json(text))),
            new("malformed JSON", (c, _) => Post(c, () => Json("{\"model\": [1, 2"))),
            new("wrong key", (c, _) => Post(c, () => Json(ImageRequest("data:,")), "sk-wrong")),
            new("text/plain body", (c, _) => Post(c, () => new StringContent(ImageRequest("data:,"), Encoding.UTF8, "text/plain"))),
            new("invalid UTF-8", (c, _) => Post(c, () => new ByteArrayContent([.. "{\"model\":\"blip2-shapes\",\"messages\":\""u8, 0xFF, 0xFE, .. "\"}"u8])
                { Headers = { ContentType = new MediaTypeHeaderValue("application/json") } })),
            new("slow body (500 B/s)", (_, s) => SlowBody(s.BaseUri)),
        ];
    }

    // A valid request dripped 100 bytes every 200 ms, then its status line read.
    private static async Task<int> SlowBody(Uri server)
    {
        byte[] body = Encoding.UTF8.GetBytes("{\"model\":\"blip2-shapes\",\"messages\":[{\"role\":\"user\",\"content\":\"" + new string('b', 1000) + "\"}]}");
        using var tcp = new TcpClient();
        await tcp.ConnectAsync(IPAddress.Loopback, server.Port);
        using var stream = tcp.GetStream();
        await stream.WriteAsync(Encoding.ASCII.GetBytes($"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {Key}\r\n" +
                                                        $"Content-Type: application/json\r\nContent-Length: {body.Length}\r\nConnection: close\r\n\r\n"));
        try
        {
            for (int i = 0; i < body.Length; i += 100)
            {
                await stream.WriteAsync(body.AsMemory(i, Math.Min(100, body.Length - i)));
                await Task.Delay(200);
            }
        }
        catch (IOException) { }                       // the server may give up on a slow body first: its answer is read below
        using var reader = new StreamReader(stream, Encoding.ASCII);
        string? status = await reader.ReadLineAsync();
        return status is not null && status.Split(' ') is [_, var code, ..] && int.TryParse(code, out int s) ? s : 0;
    }

    private static byte[] ZeroPng(int width, int height)
    {
        using var bitmap = new SKBitmap(new SKImageInfo(width, height, SKColorType.Gray8, SKAlphaType.Opaque));
        bitmap.Erase(SKColors.Black);
        using var data = bitmap.Encode(SKEncodedImageFormat.Png, 100);
        return data.ToArray();
    }

    /// <summary>The server as its own process on a free loopback port.</summary>
    private sealed class Server : IDisposable
    {
        private readonly Process _process;
        public Uri BaseUri { get; }
        public bool HasExited => _process.HasExited;

        private Server(Process process, Uri baseUri) => (_process, BaseUri) = (process, baseUri);

        public static Server Start(string repo, int budgetMb)
        {
            string dll = Directory.EnumerateFiles(Path.Combine(repo, "src", "Multimodal.Server", "bin"), "Multimodal.Server.dll", SearchOption.AllDirectories)
                .Where(p => p.Contains("net10.0", StringComparison.Ordinal)).OrderByDescending(File.GetLastWriteTimeUtc).First();
            int port;
            using (var probe = new TcpListener(IPAddress.Loopback, 0))
            {
                probe.Start();
                port = ((IPEndPoint)probe.LocalEndpoint).Port;
            }
            var uri = new Uri($"http://127.0.0.1:{port}");
            var start = new ProcessStartInfo("dotnet") { WorkingDirectory = repo, RedirectStandardOutput = true, RedirectStandardError = true };
            foreach (var a in new[] { dll, "--urls", uri.ToString(), "--Multimodal:ApiKeys:0", Key, "--Multimodal:MemoryBudgetMB", budgetMb.ToString(CultureInfo.InvariantCulture),
                         "--Multimodal:GenerationWorkingSetMB", "16", "--Multimodal:MaxQueue", "16" })
                start.ArgumentList.Add(a);
            var process = Process.Start(start)!;
            process.OutputDataReceived += (_, e) => { if (e.Data is { Length: > 0 } line) Console.WriteLine("  server: " + line); };
            process.ErrorDataReceived += (_, e) => { if (e.Data is { Length: > 0 } line) Console.WriteLine("  server: " + line); };
            process.BeginOutputReadLine();
            process.BeginErrorReadLine();
            using var client = new HttpClient { BaseAddress = uri };
            for (int i = 0; i < 600 && !process.HasExited; i++)
            {
                try
                {
                    if (client.GetAsync("/readyz").GetAwaiter().GetResult().IsSuccessStatusCode) return new Server(process, uri);
                }
                catch (HttpRequestException) { }
                Thread.Sleep(100);
            }
            process.Kill(entireProcessTree: true);
            throw new InvalidOperationException("the server did not become ready");
        }

        public long Rss()
        {
            try
            {
                foreach (var line in File.ReadLines($"/proc/{_process.Id}/status"))
                    if (line.StartsWith("VmRSS:", StringComparison.Ordinal))
                        return long.Parse(line.Split([' ', '\t'], StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture) * 1024;
            }
            catch (IOException) { }
            return 0;
        }

        // The five mappings holding the most resident memory (/proc/pid/smaps): the GC heap's reservation, malloc's
        // arenas and heap, libraries, so growth that stays can be attributed.
        public string LargestMappings()
        {
            var mappings = new List<(string Name, long Kb)>();
            string name = "";
            try
            {
                foreach (var line in File.ReadLines($"/proc/{_process.Id}/smaps"))
                {
                    if (line.Length > 0 && char.IsAsciiHexDigit(line[0]) && line.Contains('-'))
                    {
                        var parts = line.Split(' ', 6, StringSplitOptions.RemoveEmptyEntries);
                        var range = parts[0].Split('-');
                        long size = (Convert.ToInt64(range[1], 16) - Convert.ToInt64(range[0], 16)) >> 20;
                        name = (parts.Length > 5 ? Path.GetFileName(parts[5].Trim()) : "anon") + $" ({size} MB mapped)";
                    }
                    else if (line.StartsWith("Rss:", StringComparison.Ordinal))
                        mappings.Add((name, long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture)));
                }
            }
            catch (IOException) { }
            return string.Join(", ", mappings.GroupBy(m => m.Name).Select(g => (g.Key, Kb: g.Sum(m => m.Kb))).OrderByDescending(m => m.Kb).Take(6)
                .Select(m => $"{m.Key}: {m.Kb / 1024} MB"));
        }

        // The lowest of 20 samples over 2 s: what the process holds when nothing is in flight.
        public long SettledRss()
        {
            long low = long.MaxValue;
            for (int i = 0; i < 20; i++, Thread.Sleep(100)) low = Math.Min(low, Rss());
            return low;
        }

        public void Dispose()
        {
            if (!_process.HasExited) _process.Kill(entireProcessTree: true);
            _process.Dispose();
        }
    }
}
