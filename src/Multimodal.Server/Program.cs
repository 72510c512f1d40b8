// The OpenAI-compatible server: `dotnet run --project src/Multimodal.Server -- --urls http://127.0.0.1:5080`
// serves models/blip2-shapes as "blip2-shapes"; appsettings.json or environment variables
// (Multimodal__Models__0__Name, Multimodal__Models__0__Path, ...) name other models.
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.Configuration.Memory;
using Microsoft.Extensions.Options;
using Multimodal.Common;
using Multimodal.Generation;
using Multimodal.Processing;
using OpenTelemetry.Metrics;
using Multimodal.Server;

if (args.Length > 0 && args[0] == "caption-batch")
    return CaptionBatch.Run(args[1..], DefaultModel.Find());

NativeAllocator.Configure();
// The playground's files travel with the binary (wwwroot is copied to the output), wherever the server is started from.
var builder = WebApplication.CreateBuilder(new WebApplicationOptions
{
    Args = args,
    WebRootPath = Path.Combine(AppContext.BaseDirectory, "wwwroot"),
});
// Per-request lines of ASP.NET Core are Debug-level noise for an API server; configuration can still raise them.
builder.Configuration.Sources.Insert(0, new MemoryConfigurationSource
{
    InitialData = new Dictionary<string, string?> { ["Logging:LogLevel:Microsoft.AspNetCore"] = "Warning" },
});
if (builder.Configuration["Multimodal:LogFormat"] is "json")
{
    builder.Logging.ClearProviders();
    builder.Logging.AddJsonConsole();
}
builder.Services.Configure<ServerOptions>(builder.Configuration.GetSection("Multimodal"));
builder.Services.AddSingleton(sp => new ApiKeys(sp.GetRequiredService<IOptions<ServerOptions>>().Value, Environment.GetEnvironmentVariable("MULTIMODAL_API_KEY")));
builder.Services.AddSingleton<RequestBudget>();
builder.Services.AddSingleton<MemoryReturn>();
builder.Services.AddSingleton<ModelRegistry>();
builder.Services.AddHostedService(sp => sp.GetRequiredService<ModelRegistry>());
builder.Services.AddSingleton<ServerMetrics>();
builder.Services.AddOpenTelemetry().WithMetrics(metrics => metrics
    .AddAspNetCoreInstrumentation()
    .AddMeter(Telemetry.MeterName, ServerMetrics.MeterName)
    .AddPrometheusExporter());
builder.Services.AddOptions<KestrelServerOptions>().Configure<IOptions<ServerOptions>>((k, o) => k.Limits.MaxRequestBodySize = o.Value.MaxRequestBodyBytes);
builder.Services.AddCors();
builder.Services.AddOptions<Microsoft.AspNetCore.Cors.Infrastructure.CorsOptions>().Configure<IOptions<ServerOptions>>((cors, o) =>
    cors.AddDefaultPolicy(policy => policy.WithOrigins([.. o.Value.CorsOrigins]).WithMethods("GET", "POST").WithHeaders("Authorization", "Content-Type")));
var app = builder.Build();
var serverOptions = app.Services.GetRequiredService<IOptions<ServerOptions>>().Value;
if (serverOptions.AllowFileUrls && string.IsNullOrWhiteSpace(serverOptions.FileUrlRoot))
    throw new InvalidOperationException("Multimodal:AllowFileUrls needs Multimodal:FileUrlRoot: the folder file:// image URLs may read from.");
var apiKeys = app.Services.GetRequiredService<ApiKeys>();
var log = app.Logger;
var memoryReturn = app.Services.GetRequiredService<MemoryReturn>();

app.Lifetime.ApplicationStarted.Register(() =>
{
    var urls = app.Urls.ToList();
    log.LogInformation("Multimodal server on {Urls}: models {Models} (loading); API keys {Auth}; limits: body {BodyMB} MB, image {ImagePixels} pixels, " +
        "{Images} images a request, queue {Queue} a model, CORS origins {Cors}, file URLs {Files}",
        string.Join(", ", urls), string.Join(", ", app.Services.GetRequiredService<ModelRegistry>().Entries().Select(e => e.Name)),
        apiKeys.Required ? $"on ({apiKeys.Count})" : "off", serverOptions.MaxRequestBodyBytes >> 20, serverOptions.MaxImagePixels,
        serverOptions.MaxImagesPerRequest, serverOptions.MaxQueue, serverOptions.CorsOrigins.Count == 0 ? "none" : string.Join(" ", serverOptions.CorsOrigins),
        serverOptions.AllowFileUrls ? "under " + serverOptions.FileUrlRoot : "off");
    if (!apiKeys.Required && urls.Any(u => !IsLoopback(u)))
        log.LogWarning("listening on {Urls} beyond loopback with no API key: anyone who reaches the port can use the models (set Multimodal:ApiKeys, MULTIMODAL_API_KEY or Multimodal:ApiKeyFile)",
            string.Join(", ", urls));
});

app.Use(async (context, next) =>
{
    var clock = System.Diagnostics.Stopwatch.StartNew();
    context.Response.Headers["X-Request-Id"] = context.TraceIdentifier;
    try
    {
        await next(context);
    }
    catch (OpenAiException e) when (!context.Response.HasStarted)
    {
        await WriteError(context, e);
    }
    catch (Microsoft.AspNetCore.Http.BadHttpRequestException e) when (!context.Response.HasStarted)
    {
        await WriteError(context, e.StatusCode == 413 ? OpenAiException.BodyTooLarge() : new OpenAiException(e.StatusCode, e.Message));
    }
    catch (OperationCanceledException) when (context.RequestAborted.IsCancellationRequested)
    {
        // The client went away; its generation was cancelled with it.
    }
    catch (Exception e) when (!context.Response.HasStarted)
    {
        log.LogWarning(e, "request {RequestId} {Method} {Path} failed on the server's side", context.TraceIdentifier, context.Request.Method, context.Request.Path);
        await WriteError(context, new OpenAiException(500, $"The server failed to answer this request (request id {context.TraceIdentifier}).", type: "server_error"));
    }
    finally
    {
        memoryReturn.RequestEnded();
        log.LogDebug("request {RequestId} {Method} {Path} -> {Status} in {Milliseconds:F0} ms", context.TraceIdentifier, context.Request.Method,
            context.Request.Path, context.Response.StatusCode, clock.Elapsed.TotalMilliseconds);
    }
});

// Routes that do not exist and methods a route does not take answer in OpenAI's error shape, not with an empty body.
app.UseStatusCodePages(async status =>
{
    var context = status.HttpContext;
    if (context.Response.StatusCode is 404 or 405)
        await WriteError(context, context.Response.StatusCode == 404
            ? new OpenAiException(404, $"There is no route {context.Request.Method} {context.Request.Path}.", code: "not_found")
            : new OpenAiException(405, $"{context.Request.Path} does not take {context.Request.Method}.", code: "method_not_allowed"));
});
app.UseCors();   // with no origins configured (the default) no cross-origin request is allowed

// The playground page (wwwroot/, at /): static files only (no directory listing, only known content types), with a
// policy that runs no inline script and lets the page load and reach nothing but this origin. Its requests to /v1 pass
// the same API-key check as any client's.
app.UseDefaultFiles();
app.UseStaticFiles(new StaticFileOptions
{
    OnPrepareResponse = files =>
    {
        var headers = files.Context.Response.Headers;
        headers.ContentSecurityPolicy = PlaygroundHeaders.Policy;
        headers.XContentTypeOptions = "nosniff";
        headers["Referrer-Policy"] = "no-referrer";
    },
});

// Authentication before a byte of the body is read; then only JSON bodies, so a web page cannot post a "simple"
// (text/plain or form) cross-origin request that the browser sends without asking.
app.Use(async (context, next) =>
{
    string path = context.Request.Path.Value ?? "";
    bool api = path.StartsWith("/v1/", StringComparison.Ordinal) || path == "/v1";
    bool metrics = path == "/metrics" && serverOptions.MetricsRequireKey;
    if ((api || metrics) && !HttpMethods.IsOptions(context.Request.Method) && !apiKeys.Accepts(context.Request.Headers.Authorization))
    {
        context.Response.Headers.WWWAuthenticate = "Bearer";
        throw new OpenAiException(401, "Incorrect or missing API key: send it as 'Authorization: Bearer <key>'.", code: "invalid_api_key");
    }
    if (api && HttpMethods.IsPost(context.Request.Method) && !IsJson(context.Request.ContentType))
        throw new OpenAiException(415, $"The request body must be JSON (Content-Type: application/json), not '{context.Request.ContentType ?? "none"}'.",
            code: "unsupported_media_type");
    await next(context);
});

app.MapPrometheusScrapingEndpoint("/metrics");
app.MapGet("/healthz", () => Results.Text("ok"));
app.MapGet("/readyz", (ModelRegistry registry) => registry.Ready
    ? Results.Text("ready")
    : Results.Text(registry.Failure is null ? "loading" : "failed: " + registry.Failure, statusCode: 503));

app.MapGet("/v1/models", (ModelRegistry registry) => Results.Json(new JsonObject
{
    ["object"] = "list",
    ["data"] = new JsonArray(registry.Models.Values.Select(m => (JsonNode)new JsonObject
    {
        ["id"] = m.Name, ["object"] = "model", ["created"] = m.Created, ["owned_by"] = "multimodal", ["max_model_len"] = m.ContextLength,
        // Extensions (as vLLM adds max_model_len): which endpoint the model answers, and whether a message may interleave
        // several images with text.
        ["task"] = m.Chat is null ? "embeddings" : "chat", ["interleaved"] = m.Interleaved,
    }).ToArray()),
}));

app.MapPost("/v1/chat/completions", async (HttpContext context, ModelRegistry registry, IOptions<ServerOptions> options, ServerMetrics metrics,
    RequestBudget budget) =>
{
    var clock = System.Diagnostics.Stopwatch.StartNew();
    // The model label is a served model's name, or empty before one is known: a name a client made up must not
    // become a new series.
    string modelName = "";
    long tokens = 0;
    bool failed = false;
    try
    {
        return await ChatCompletion(context, registry, options.Value, budget, name => modelName = name, n => tokens = n);
    }
    catch (OpenAiException e)
    {
        failed = true;
        metrics.Request(modelName, e.Status, clock.Elapsed.TotalSeconds, 0);
        throw;
    }
    finally
    {
        if (!failed && context.Response.StatusCode < 400) metrics.Request(modelName, context.Response.StatusCode, clock.Elapsed.TotalSeconds, tokens);
    }
});

app.MapPost("/v1/embeddings", async (HttpContext context, ModelRegistry registry, IOptions<ServerOptions> options, RequestBudget budget) =>
{
    var (json, strings) = await ReadJson(context, options.Value, budget);
    var (modelName, inputs, base64) = OpenAiProtocol.ParseEmbeddings(json, options.Value, strings);
    var model = Served(registry, modelName);
    if (model.Embeddings is not { } generator)
        throw new OpenAiException(400, $"'{model.Name}' is a generative model: it answers chat completions, not /v1/embeddings.", "model", "model_not_supported");
    ReserveImages(context, inputs.OfType<DataContent>(), options.Value, budget);
    Admit(model);
    try
    {
        // Texts and images are embedded in one call each, then put back in request order.
        var texts = inputs.OfType<string>().ToList();
        var images = inputs.OfType<DataContent>().ToList();
        var textVectors = texts.Count == 0 ? [] : (await Generate(() => ((IEmbeddingGenerator<string, Embedding<float>>)generator).GenerateAsync(texts, null, context.RequestAborted))).ToList();
        var imageVectors = images.Count == 0 ? [] : (await Generate(() => ((IEmbeddingGenerator<DataContent, Embedding<float>>)generator).GenerateAsync(images, null, context.RequestAborted))).ToList();
        int t = 0, im = 0;
        var data = new JsonArray();
        for (int i = 0; i < inputs.Count; i++)
        {
            var vector = (inputs[i] is string ? textVectors[t++] : imageVectors[im++]).Vector;
            JsonNode embedding = base64
                ? Convert.ToBase64String(System.Runtime.InteropServices.MemoryMarshal.AsBytes(vector.Span))
                : new JsonArray(vector.ToArray().Select(v => (JsonNode)v).ToArray());
            data.Add(new JsonObject { ["object"] = "embedding", ["index"] = i, ["embedding"] = embedding });
        }
        long tokens = texts.Sum(x => (long)x.Length);   // no tokenizer count is exposed; characters stand in
        return Results.Json(new JsonObject
        {
            ["object"] = "list", ["data"] = data, ["model"] = model.Name,
            ["usage"] = new JsonObject { ["prompt_tokens"] = tokens, ["total_tokens"] = tokens },
        });
    }
    finally
    {
        model.Admission.Release();
    }
});

app.Run();
return 0;

// The body is read whole (Kestrel bounds it) after its worst case is reserved: the bytes, the parsed document and the
// strings and images taken out of it are each at most about the body's size.
// The document lives until the response ends (no copy of it is made).
static async Task<(JsonElement Root, BodyStrings? Strings)> ReadJson(HttpContext context, ServerOptions options, RequestBudget budget)
{
    long declared = context.Request.ContentLength ?? options.MaxRequestBodyBytes;
    if (declared > options.MaxRequestBodyBytes) throw OpenAiException.BodyTooLarge();
    context.Response.RegisterForDispose(budget.Reserve(declared * 4, "This request's body and what is parsed from it"));
    var body = await NativeBody.ReadAsync(context.Request.Body, context.Request.ContentLength, options.MaxRequestBodyBytes, context.RequestAborted);
    context.Response.RegisterForDispose(body);
    var bytes = body.Bytes;
    if (!System.Text.Unicode.Utf8.IsValid(bytes.Span))
        throw new OpenAiException(400, "The request body is not valid UTF-8.", code: "invalid_utf8");
    try
    {
        return BodyStrings.Parse(bytes);
    }
    catch (JsonException e)
    {
        throw new OpenAiException(400, $"The request body is not valid JSON: {e.Message}", code: "invalid_json");
    }
}

// Each image's decode cost comes from its header, before anything is decoded: too many pixels is this request's fault
// (400); the cost of all of them, with a generation's working set, is reserved for the rest of the request.
static void ReserveImages(HttpContext context, IEnumerable<DataContent> images, ServerOptions options, RequestBudget budget)
{
    long bytes = (long)options.GenerationWorkingSetMB << 20;
    int index = 0;
    foreach (var image in images)
    {
        ImageHeader header;
        try { header = ImageHeader.Read(image.Data.Span, $"image {index}"); }
        catch (ImageDecodeException e) { throw new OpenAiException(400, e.Message, code: "invalid_image"); }
        if (header.Pixels > options.MaxImagePixels)
            throw new OpenAiException(400, $"image {index}: {header.FormatName} of {header.Width}x{header.Height} = {header.Pixels} pixels exceeds this " +
                                           $"server's limit of {options.MaxImagePixels} (Multimodal:MaxImagePixels).", code: "invalid_image");
        bytes += header.DecodeBytes;
        index++;
    }
    context.Response.RegisterForDispose(budget.Reserve(bytes, "This request's images and generation"));
}

static bool IsJson(string? contentType) =>
    contentType is not null && Microsoft.Net.Http.Headers.MediaTypeHeaderValue.TryParse(contentType, out var media)
    && (media.MediaType.Equals("application/json", StringComparison.OrdinalIgnoreCase)
        || media.MediaType.Value?.EndsWith("+json", StringComparison.OrdinalIgnoreCase) == true)
    && (media.Charset.Length == 0 || media.Charset.Equals("utf-8", StringComparison.OrdinalIgnoreCase));

static bool IsLoopback(string url) =>
    Uri.TryCreate(url.Replace("://*", "://0.0.0.0").Replace("://+", "://0.0.0.0"), UriKind.Absolute, out var uri)
    && (uri.IsLoopback || (System.Net.IPAddress.TryParse(uri.Host.Trim('[', ']'), out var ip) && System.Net.IPAddress.IsLoopback(ip)));

// A model's admission slots bound its queue: a request that finds none free gets 429 at once.
static void Admit(ServedModel model)
{
    if (model.Admission.Wait(0)) return;
    throw new OpenAiException(429, $"The queue for '{model.Name}' is full; retry shortly.", type: "rate_limit_error", code: "queue_full");
}

static ServedModel Served(ModelRegistry registry, string name)
{
    if (!registry.Ready) throw new OpenAiException(503, "The server is still loading its models.", type: "server_error", code: "not_ready");
    return registry.Models.TryGetValue(name, out var model) ? model
        : throw new OpenAiException(404, $"The model '{name}' does not exist; this server has {string.Join(", ", registry.Models.Keys)}.", "model", "model_not_found");
}

static async Task<IResult> ChatCompletion(HttpContext context, ModelRegistry registry, ServerOptions options, RequestBudget budget,
    Action<string> onModel, Action<long> onTokens)
{
    var (body, strings) = await ReadJson(context, options, budget);
    if (body.ValueKind != JsonValueKind.Object || !body.TryGetProperty("model", out var name) || name.ValueKind != JsonValueKind.String)
        OpenAiProtocol.ParseChat(body, options);          // throws the error for the missing or malformed field
    var model = Served(registry, body.GetProperty("model").GetString()!);
    onModel(model.Name);
    var request = OpenAiProtocol.ParseChat(body, options, model.MaxTextBytes, strings);
    var chat = model.Chat ?? throw new OpenAiException(400, $"'{model.Name}' is a retrieval model: it answers /v1/embeddings, not chat completions.", "model", "model_not_supported");
    ReserveImages(context, request.Images, options, budget);
    Admit(model);
    try
    {
        string id = "chatcmpl-" + Guid.NewGuid().ToString("N");
        long created = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        if (!request.Stream)
        {
            var response = await Generate(() => chat.GetResponseAsync(request.Messages, request.Options, context.RequestAborted), request.MaxTokensParam);
            onTokens(response.Usage?.OutputTokenCount ?? 0);
            return Results.Json(new JsonObject
            {
                ["id"] = id, ["object"] = "chat.completion", ["created"] = created, ["model"] = model.Name,
                ["choices"] = new JsonArray(new JsonObject
                {
                    ["index"] = 0,
                    ["message"] = new JsonObject { ["role"] = "assistant", ["content"] = response.Text },
                    ["finish_reason"] = OpenAiProtocol.FinishReason(response.FinishReason),
                }),
                ["usage"] = OpenAiProtocol.Usage(response.Usage),
            });
        }
        onTokens(await StreamAsync(context, chat, model.Name, request, id, created));
        return Results.Empty;
    }
    finally
    {
        model.Admission.Release();
    }
}

// Errors the library raises for bad input (an undecodable image, an option a family refuses, a text too long) are the
// client's: 400. A length the client set that the positions cannot hold names the field it came in.
static async Task<T> Generate<T>(Func<Task<T>> run, string? maxTokensParam = null)
{
    try
    {
        return await run();
    }
    catch (GenerationLengthException e)
    {
        string param = maxTokensParam ?? "max_tokens";
        throw new OpenAiException(400, $"'{param}' = {e.Requested} does not fit: this model's positions leave room for {e.Largest} new tokens after this prompt.",
            param, "context_length_exceeded");
    }
    catch (Exception e) when (e is ImageDecodeException or NotSupportedException or ArgumentException)
    {
        throw new OpenAiException(400, e.Message, code: e is ImageDecodeException ? "invalid_image" : null);
    }
}

// Server-sent events in OpenAI's chunk format: a role chunk, content chunks, a finish chunk, optionally a usage
// chunk, then [DONE]. The first chunk is written only once the first text arrived, so an error before it (a bad
// image) is still an ordinary 400.
static async Task<long> StreamAsync(HttpContext context, IChatClient chat, string modelName, ChatCompletionRequest request, string id, long created)
{
    JsonObject Chunk(JsonObject delta, string? finish) => new()
    {
        ["id"] = id, ["object"] = "chat.completion.chunk", ["created"] = created, ["model"] = modelName,
        ["choices"] = new JsonArray(new JsonObject { ["index"] = 0, ["delta"] = delta, ["finish_reason"] = finish }),
    };
    async Task Send(JsonNode node)
    {
        await context.Response.WriteAsync("data: " + node.ToJsonString() + "\n\n", context.RequestAborted);
        await context.Response.Body.FlushAsync(context.RequestAborted);
    }
    var updates = chat.GetStreamingResponseAsync(request.Messages, request.Options, context.RequestAborted).GetAsyncEnumerator(context.RequestAborted);
    try
    {
        bool started = false;
        ChatFinishReason? finish = null;
        UsageDetails? usage = null;
        while (await Generate(async () => await updates.MoveNextAsync(), request.MaxTokensParam))
        {
            var update = updates.Current;
            if (!started)
            {
                context.Response.ContentType = "text/event-stream";
                context.Response.Headers.CacheControl = "no-cache";
                await Send(Chunk(new JsonObject { ["role"] = "assistant", ["content"] = "" }, null));
                started = true;
            }
            if (update.Text.Length > 0) await Send(Chunk(new JsonObject { ["content"] = update.Text }, null));
            finish ??= update.FinishReason;
            usage ??= update.Contents.OfType<UsageContent>().FirstOrDefault()?.Details;
        }
        await Send(Chunk(new JsonObject(), OpenAiProtocol.FinishReason(finish)));
        if (request.IncludeUsage)
            await Send(new JsonObject
            {
                ["id"] = id, ["object"] = "chat.completion.chunk", ["created"] = created, ["model"] = modelName,
                ["choices"] = new JsonArray(), ["usage"] = OpenAiProtocol.Usage(usage),
            });
        await context.Response.WriteAsync("data: [DONE]\n\n", context.RequestAborted);
        return usage?.OutputTokenCount ?? 0;
    }
    finally
    {
        await updates.DisposeAsync();
    }
}

// Every 429 (a full queue, a full memory budget) tells the client when to retry.
static Task WriteError(HttpContext context, OpenAiException e)
{
    context.Response.StatusCode = e.Status;
    if (e.Status == 429) context.Response.Headers.RetryAfter = "1";
    return context.Response.WriteAsJsonAsync(e.Body());
}

/// <summary>The entry point, visible to in-process tests (WebApplicationFactory).</summary>
public partial class Program;

/// <summary>The playground page's Content-Security-Policy.</summary>
internal static partial class PlaygroundHeaders
{
    public const string Policy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; " +
                                 "base-uri 'none'; form-action 'none'; frame-ancestors 'none'";
}
