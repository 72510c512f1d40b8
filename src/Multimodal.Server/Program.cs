// The OpenAI-compatible server: `dotnet run --project src/Multimodal.Server -- --urls http://127.0.0.1:5080`
// serves models/blip2-shapes as "blip2-shapes"; appsettings.json or environment variables
// (Multimodal__Models__0__Name, Multimodal__Models__0__Path, ...) name other models.
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.Options;
using Multimodal.Common;
using Multimodal.Processing;
using OpenTelemetry.Metrics;
using Multimodal.Server;

if (args.Length > 0 && args[0] == "caption-batch")
    return CaptionBatch.Run(args[1..], DefaultModel.Find());

var builder = WebApplication.CreateBuilder(args);
builder.Services.Configure<ServerOptions>(builder.Configuration.GetSection("Multimodal"));
builder.Services.AddSingleton<ModelRegistry>();
builder.Services.AddHostedService(sp => sp.GetRequiredService<ModelRegistry>());
builder.Services.AddSingleton<ServerMetrics>();
builder.Services.AddOpenTelemetry().WithMetrics(metrics => metrics
    .AddAspNetCoreInstrumentation()
    .AddMeter(Telemetry.MeterName, ServerMetrics.MeterName)
    .AddPrometheusExporter());
builder.Services.Configure<KestrelServerOptions>(k =>
    k.Limits.MaxRequestBodySize = builder.Configuration.GetSection("Multimodal").Get<ServerOptions>()?.MaxRequestBodyBytes ?? new ServerOptions().MaxRequestBodyBytes);
var app = builder.Build();

app.Use(async (context, next) =>
{
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
        await WriteError(context, new OpenAiException(e.StatusCode, e.StatusCode == 413
            ? "The request body is larger than this server accepts (Multimodal:MaxRequestBodyBytes)." : e.Message, code: e.StatusCode == 413 ? "request_too_large" : null));
    }
    catch (OperationCanceledException) when (context.RequestAborted.IsCancellationRequested)
    {
        // The client went away; its generation was cancelled with it.
    }
    catch (Exception e) when (!context.Response.HasStarted)
    {
        app.Logger.LogError(e, "request failed");
        await WriteError(context, new OpenAiException(500, "The server failed to answer this request: " + e.Message, type: "server_error"));
    }
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
        ["id"] = m.Name, ["object"] = "model", ["created"] = m.Created, ["owned_by"] = "multimodal",
    }).ToArray()),
}));

app.MapPost("/v1/chat/completions", async (HttpContext context, ModelRegistry registry, IOptions<ServerOptions> options, ServerMetrics metrics) =>
{
    var clock = System.Diagnostics.Stopwatch.StartNew();
    string modelName = "";
    long tokens = 0;
    try
    {
        return await ChatCompletion(context, registry, options.Value, name => modelName = name, n => tokens = n);
    }
    catch (OpenAiException e)
    {
        metrics.Request(modelName, e.Status, clock.Elapsed.TotalSeconds, 0);
        throw;
    }
    finally
    {
        if (context.Response.StatusCode < 400) metrics.Request(modelName, context.Response.StatusCode, clock.Elapsed.TotalSeconds, tokens);
    }
});

app.MapPost("/v1/embeddings", async (HttpContext context, ModelRegistry registry, IOptions<ServerOptions> options) =>
{
    var (modelName, inputs, base64) = OpenAiProtocol.ParseEmbeddings(await ReadJson(context), options.Value);
    var model = Served(registry, modelName);
    if (model.Embeddings is not { } generator)
        throw new OpenAiException(400, $"'{model.Name}' is a generative model: it answers chat completions, not /v1/embeddings.", "model", "model_not_supported");
    Admit(context, model);
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

static async Task<JsonElement> ReadJson(HttpContext context)
{
    try
    {
        using var doc = await JsonDocument.ParseAsync(context.Request.Body, cancellationToken: context.RequestAborted);
        return doc.RootElement.Clone();
    }
    catch (JsonException e)
    {
        throw new OpenAiException(400, $"The request body is not valid JSON: {e.Message}", code: "invalid_json");
    }
}

// A model's admission slots bound its queue: a request that finds none free gets 429 at once.
static void Admit(HttpContext context, ServedModel model)
{
    if (model.Admission.Wait(0)) return;
    context.Response.Headers.RetryAfter = "1";
    throw new OpenAiException(429, $"The queue for '{model.Name}' is full; retry shortly.", type: "rate_limit_error", code: "queue_full");
}

static ServedModel Served(ModelRegistry registry, string name)
{
    if (!registry.Ready) throw new OpenAiException(503, "The server is still loading its models.", type: "server_error", code: "not_ready");
    return registry.Models.TryGetValue(name, out var model) ? model
        : throw new OpenAiException(404, $"The model '{name}' does not exist; this server has {string.Join(", ", registry.Models.Keys)}.", "model", "model_not_found");
}

static async Task<IResult> ChatCompletion(HttpContext context, ModelRegistry registry, ServerOptions options, Action<string> onModel, Action<long> onTokens)
{
    var request = OpenAiProtocol.ParseChat(await ReadJson(context), options);
    var model = Served(registry, request.Model);
    onModel(model.Name);
    var chat = model.Chat ?? throw new OpenAiException(400, $"'{model.Name}' is a retrieval model: it answers /v1/embeddings, not chat completions.", "model", "model_not_supported");
    Admit(context, model);
    try
    {
        string id = "chatcmpl-" + Guid.NewGuid().ToString("N");
        long created = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        if (!request.Stream)
        {
            var response = await Generate(() => chat.GetResponseAsync(request.Messages, request.Options, context.RequestAborted));
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

// Errors the library raises for bad input (an undecodable image, an option a family refuses) are the client's: 400.
static async Task<T> Generate<T>(Func<Task<T>> run)
{
    try
    {
        return await run();
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
        while (await Generate(async () => await updates.MoveNextAsync()))
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

static Task WriteError(HttpContext context, OpenAiException e)
{
    context.Response.StatusCode = e.Status;
    return context.Response.WriteAsJsonAsync(e.Body());
}

/// <summary>The entry point, visible to in-process tests (WebApplicationFactory).</summary>
public partial class Program;
