using System.Text.Json;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.Options;
using Multimodal.Blip2;
using Multimodal.Flamingo;
using Multimodal.Generation;
using Multimodal.Idefics;
using Multimodal.Loading;
using Multimodal.Processing;

namespace Multimodal.Server;

/// <summary>A loaded model as the endpoints see it.</summary>
/// <param name="Name">the name clients send.</param>
/// <param name="Chat">the family's <see cref="IChatClient"/>; null for a retrieval model.</param>
/// <param name="Embeddings">a retrieval model's text and image embeddings; null for a generative model.</param>
/// <param name="Admission">one slot per request allowed in (the one generating and the queue behind it).</param>
/// <param name="Created">when it was loaded (Unix seconds), for <c>/v1/models</c>.</param>
/// <param name="ContextLength">the language model's positions (vLLM's <c>max_model_len</c>); null when it has no limit.</param>
/// <param name="MaxTextBytes">the longest text part its positions can hold (<see cref="TextLimit"/>), refused while parsing.</param>
/// <param name="Interleaved">whether a message may hold several images with text between them (OpenFlamingo, IDEFICS);
/// BLIP-2 and InstructBLIP read one image per conversation.</param>
public sealed record ServedModel(string Name, IChatClient? Chat, Blip2EmbeddingGenerator? Embeddings, SemaphoreSlim Admission, long Created,
    int? ContextLength, long MaxTextBytes, bool Interleaved = false);

/// <summary>Loads the configured models in the background at start (logging progress), so <c>/healthz</c>
/// answers at once and <c>/readyz</c> turns ready when every model is loaded; disposes them at shutdown.</summary>
public sealed class ModelRegistry(IOptions<ServerOptions> options, ILogger<ModelRegistry> logger, RequestBudget budget) : BackgroundService
{
    private readonly Dictionary<string, ServedModel> _models = new(StringComparer.Ordinal);
    private readonly List<IDisposable> _owners = [];
    private volatile bool _ready;

    /// <summary>True once every configured model is loaded.</summary>
    public bool Ready => _ready;

    /// <summary>Why loading failed, when it did.</summary>
    public string? Failure { get; private set; }

    /// <summary>The loaded models, by name.</summary>
    public IReadOnlyDictionary<string, ServedModel> Models => _models;

    /// <summary>The models to load: the configured ones, or <c>models/blip2-shapes</c> found from the working
    /// directory or above the application.</summary>
    public IReadOnlyList<ModelEntry> Entries()
    {
        if (options.Value.Models.Count > 0) return options.Value.Models;
        return [new ModelEntry { Name = "blip2-shapes", Path = DefaultModel.Find() }];
    }

    /// <inheritdoc/>
    protected override Task ExecuteAsync(CancellationToken stoppingToken) => Task.Run(() =>
    {
        try
        {
            foreach (var entry in Entries())
            {
                stoppingToken.ThrowIfCancellationRequested();
                if (entry.Name.Length == 0) throw new InvalidOperationException("Multimodal:Models: an entry has no Name.");
                logger.LogInformation("loading {Model} from {Path}", entry.Name, entry.Path);
                var started = DateTime.UtcNow;
                int lastPercent = -10;
                var progress = new Reporter(p =>
                {
                    int percent = p.TotalBytes == 0 ? 100 : (int)(100 * p.BytesLoaded / p.TotalBytes);
                    if (percent < lastPercent + 10) return;
                    lastPercent = percent;
                    logger.LogInformation("loading {Model}: {Percent}% of {Megabytes} MB", entry.Name, percent, p.TotalBytes / 1_000_000);
                });
                var (chat, embeddings, owner, context, tokenizer, family) = Load(entry, options.Value, progress);
                _owners.Add(owner);
                _models[entry.Name] = new ServedModel(entry.Name, chat, embeddings, new SemaphoreSlim(options.Value.MaxQueue + 1),
                    DateTimeOffset.UtcNow.ToUnixTimeSeconds(), context, TextLimit.MaxBytes(context ?? TextLimit.DefaultPositions, tokenizer),
                    family is ModelFamily.OpenFlamingo or ModelFamily.Idefics);
                logger.LogInformation("loaded {Model} in {Seconds:F1} s", entry.Name, (DateTime.UtcNow - started).TotalSeconds);
            }
            SetBudget();
            _ready = true;
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            Failure = e.Message;
            logger.LogError(e, "loading the models failed; /readyz stays unready");
        }
    }, stoppingToken);

    // The process's resident memory now, in bytes (0 where /proc is not there).
    private static long ResidentBytes()
    {
        if (!File.Exists("/proc/self/status")) return 0;
        foreach (var line in File.ReadLines("/proc/self/status"))
            if (line.StartsWith("VmRSS:", StringComparison.Ordinal))
                return long.Parse(line.Split([' ', '\t'], StringSplitOptions.RemoveEmptyEntries)[1]) * 1024;
        return 0;
    }

    // Requests get what the process may use (the container's limit, which the GC reads from the cgroup, else the
    // machine's memory) times three quarters, less what the loaded models hold; or what Multimodal:MemoryBudgetMB says.
    // The garbage requests leave between two collections (MemoryReturn.Slack) is held beside the reservations, so it
    // comes out of the same memory.
    private void SetBudget()
    {
        long resident = ResidentBytes();
        long capacity = (options.Value.MemoryBudgetMB > 0
            ? (long)options.Value.MemoryBudgetMB << 20
            : GC.GetGCMemoryInfo().TotalAvailableMemoryBytes / 4 * 3 - resident) - MemoryReturn.Slack;
        // One request at its worst: a full body (4x: bytes, document, strings, decoded images), one image at the pixel
        // limit and a generation's working set. A smaller budget still admits one such request at a time.
        var o = options.Value;
        long one = o.MaxRequestBodyBytes * 4 + o.MaxImagePixels * 8 + ((long)o.GenerationWorkingSetMB << 20);
        if (capacity < one)
        {
            logger.LogWarning("the request memory budget ({Budget} MB) is below one request's worst case ({One} MB); requests are admitted one at a time",
                capacity >> 20, one >> 20);
            capacity = one;
        }
        budget.SetCapacity(capacity);
        logger.LogInformation("ready: {Count} models, {Resident} MB resident, request memory budget {Budget} MB", _models.Count, resident >> 20, capacity >> 20);
    }

    // The library reads the family (VisionLanguageModel.Family); a retrieval model serves embeddings, every other family text.
    private static (IChatClient?, Blip2EmbeddingGenerator?, IDisposable, int?, ITextTokenizer, ModelFamily) Load(ModelEntry entry, ServerOptions server,
        IProgress<LoadProgress> progress)
    {
        string folder = HubCache.Resolve(entry.Path, entry.Revision);
        var family = VisionLanguageModel.Family(folder);
        if (family == ModelFamily.Blip2Retrieval)
        {
            var retriever = Blip2Retriever.FromPretrained(folder, progress: progress);
            return (null, retriever.AsEmbeddingGenerator(entry.Name), retriever, retriever.Model.Config.QformerConfig.MaxPositionEmbeddings, retriever.Tokenizer, family);
        }
        var batching = server.MaxBatchSize > 1 ? new BatchingOptions(server.MaxBatchSize, TimeSpan.FromMilliseconds(server.MaxBatchWaitMs)) : null;
        var model = VisionLanguageModel.FromPretrained(folder, progress: progress, batching: batching, quantization: entry.Quantize);
        return (model.AsChatClient(entry.Name), null, model, model.ContextLength, model.Tokenizer, family);
    }

    // Progress<T> posts reports to the thread pool out of order; loading reports on its own thread.
    private sealed class Reporter(Action<LoadProgress> report) : IProgress<LoadProgress>
    {
        public void Report(LoadProgress value) => report(value);
    }

    /// <inheritdoc/>
    public override void Dispose()
    {
        foreach (var owner in _owners) owner.Dispose();
        base.Dispose();
    }
}
