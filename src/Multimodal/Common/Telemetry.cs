using System.Diagnostics.Metrics;

namespace Multimodal.Common;

/// <summary>The library's <see cref="Meter"/>, named "Multimodal": an application exports it with its metrics
/// pipeline (OpenTelemetry's <c>AddMeter("Multimodal")</c>); without a listener it costs nothing.</summary>
public static class Telemetry
{
    /// <summary>The meter's name.</summary>
    public const string MeterName = "Multimodal";

    internal static readonly Meter Meter = new(MeterName);
}
