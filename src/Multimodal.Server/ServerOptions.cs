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

    /// <summary>Whether <c>file://</c> image URLs are read (from the server's disk). Off by default.</summary>
    public bool AllowFileUrls { get; set; }
}
