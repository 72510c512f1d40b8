namespace Multimodal.Server;

/// <summary>One model the server loads at start (configuration section <c>Multimodal:Models</c>).</summary>
public sealed class ModelEntry
{
    /// <summary>The name clients send as <c>model</c>.</summary>
    public string Name { get; set; } = "";

    /// <summary>A checkpoint folder, or a hub id resolved in the offline Hugging Face cache.</summary>
    public string Path { get; set; } = "";

    /// <summary>With a hub id: branch, tag or commit in the cache (default main).</summary>
    public string? Revision { get; set; }

    /// <summary>Weight-only quantization of the language model: None (default), Int8 or Int4.</summary>
    public Multimodal.Common.WeightQuantization Quantize { get; set; }
}

/// <summary>Server settings (configuration section <c>Multimodal</c>; environment variables such as
/// <c>Multimodal__MaxTokensCap=128</c> override appsettings.json).</summary>
public sealed class ServerOptions
{
    /// <summary>Models to serve; empty means <c>models/blip2-shapes</c> as <c>blip2-shapes</c>.</summary>
    public List<ModelEntry> Models { get; set; } = [];

    /// <summary>Largest <c>max_tokens</c> / <c>max_completion_tokens</c> accepted (absent, the model's generation defaults apply).</summary>
    public int MaxTokensCap { get; set; } = 256;

    /// <summary>Requests per model allowed to wait behind the one generating; more get 429.</summary>
    public int MaxQueue { get; set; } = 16;

    /// <summary>Largest request body in bytes (base64 images included).</summary>
    public long MaxRequestBodyBytes { get; set; } = 20L << 20;

    /// <summary>Dynamic batching: most concurrent non-streaming requests for one model run as one generation.</summary>
    public int MaxBatchSize { get; set; } = 8;

    /// <summary>Dynamic batching: how long (ms) the first waiting request waits for others to join its batch.</summary>
    public int MaxBatchWaitMs { get; set; } = 10;

    /// <summary>Whether <c>file://</c> image URLs are read (from the server's disk). Off by default; when on,
    /// <see cref="FileUrlRoot"/> is required and only regular files under it are read.</summary>
    public bool AllowFileUrls { get; set; }

    /// <summary>With <see cref="AllowFileUrls"/>: the folder file URLs may name (links and <c>..</c> are resolved first and
    /// must stay inside it).</summary>
    public string? FileUrlRoot { get; set; }

    /// <summary>API keys: with any set (here, in <c>MULTIMODAL_API_KEY</c> or in <see cref="ApiKeyFile"/>), every
    /// <c>/v1</c> route needs <c>Authorization: Bearer &lt;key&gt;</c>.</summary>
    public List<string> ApiKeys { get; set; } = [];

    /// <summary>A file with one API key per line (a Kubernetes Secret mounted as a file); blank lines and lines starting
    /// with # are skipped.</summary>
    public string? ApiKeyFile { get; set; }

    /// <summary>Whether <c>/metrics</c> needs the API key too (when keys are set). Off: scrapers reach it without one.</summary>
    public bool MetricsRequireKey { get; set; }

    /// <summary>Largest image a request may carry, in pixels, read from its header before anything is decoded. The
    /// default, 12.6 M (a 12-megapixel phone photo, 4096 × 3072), keeps one decode and its preprocessing near 100 MB
    /// (8 bytes a pixel at the peak).</summary>
    public long MaxImagePixels { get; set; } = 4096L * 3072;

    /// <summary>Most images one request may carry.</summary>
    public int MaxImagesPerRequest { get; set; } = 8;

    /// <summary>The memory requests may use, in MB, beside what the server holds when its models are loaded: admitted
    /// requests' worst cases (body, decoded images, generation) must fit in it together; a request that does not fit now
    /// gets 429, one that could never fit gets 413. 0 (default): three quarters of the memory the process may use (the
    /// container's limit where one is set, else the machine's) less the loaded models.</summary>
    public int MemoryBudgetMB { get; set; }

    /// <summary>The working memory one generation needs beyond its inputs (activations, KV cache), in MB.</summary>
    public int GenerationWorkingSetMB { get; set; } = 64;

    /// <summary>Origins allowed to call the API from a browser (CORS). Empty (default): none; pages the server itself
    /// serves are same-origin and need none.</summary>
    public List<string> CorsOrigins { get; set; } = [];
}
