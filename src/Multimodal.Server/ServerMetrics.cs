using System.Diagnostics.Metrics;

namespace Multimodal.Server;

/// <summary>The server's own instruments (meter "Multimodal.Server"), exported with ASP.NET Core's request
/// metrics and the library's batch sizes on <c>/metrics</c> for Prometheus.</summary>
public sealed class ServerMetrics
{
    /// <summary>The meter's name.</summary>
    public const string MeterName = "Multimodal.Server";

    private readonly Counter<long> _requests;
    private readonly Histogram<double> _duration;
    private readonly Counter<long> _tokens;

    /// <summary>Creates the instruments; the queue depth is read from the registry when scraped.</summary>
    public ServerMetrics(IMeterFactory meters, ModelRegistry registry, Microsoft.Extensions.Options.IOptions<ServerOptions> options)
    {
        var meter = meters.Create(MeterName);
        _requests = meter.CreateCounter<long>("multimodal.server.requests", "{request}", "Chat completion requests by model and status.");
        _duration = meter.CreateHistogram<double>("multimodal.server.request.duration", "s", "Chat completion latency.");
        _tokens = meter.CreateCounter<long>("multimodal.server.tokens", "{token}", "Generated tokens (rate() gives tokens/s).");
        meter.CreateObservableGauge("multimodal.server.queue.depth", () => registry.Models.Values.Select(m =>
            new Measurement<int>(options.Value.MaxQueue + 1 - m.Admission.CurrentCount, new KeyValuePair<string, object?>("model", m.Name))),
            "{request}", "Requests admitted for a model and not yet answered (generating or waiting).");
        meter.CreateObservableGauge("multimodal.server.live_tensors", () => TorchSharp.torch.Tensor.TotalCount,
            "{tensor}", "TorchSharp tensors alive in the process (the models' parameters plus anything in flight); flat under load.");
    }

    /// <summary>Records one answered chat completion request.</summary>
    public void Request(string model, int status, double seconds, long tokens)
    {
        var tags = new System.Diagnostics.TagList { { "model", model }, { "status", status } };
        _requests.Add(1, tags);
        _duration.Record(seconds, tags);
        if (tokens > 0) _tokens.Add(tokens, new KeyValuePair<string, object?>("model", model));
    }
}
