namespace Multimodal.Common;

/// <summary>The <c>quantization_config</c> a folder saved quantized by this library carries in its config.json, as
/// transformers' quantized checkpoints do (<c>quant_method</c> names the scheme). The layout mirrors compressed-tensors'
/// weight-only naming: each quantized linear's <c>weight</c> holds the integers and <c>weight_scale</c> the float32 scales.</summary>
public sealed record QuantizationConfig
{
    /// <summary>This library's scheme (see <see cref="WeightQuantization"/>).</summary>
    public const string Method = "multimodal-weight-only";

    /// <summary><c>quant_method</c>: the scheme.</summary>
    public string QuantMethod { get; init; } = Method;

    /// <summary><c>bits</c>: 8 or 4.</summary>
    public int Bits { get; init; }

    /// <summary><c>group_size</c>: −1 (one scale per output channel, 8 bits) or 32 (4 bits).</summary>
    public int GroupSize { get; init; }

    /// <summary>The config of <paramref name="kind"/>.</summary>
    public static QuantizationConfig? For(WeightQuantization kind) => kind switch
    {
        WeightQuantization.Int8 => new QuantizationConfig { Bits = 8, GroupSize = -1 },
        WeightQuantization.Int4 => new QuantizationConfig { Bits = 4, GroupSize = QuantizedLinear.Group },
        _ => null,
    };

    /// <summary>The quantization this config describes.</summary>
    /// <exception cref="ConfigException">another scheme, or bits and group size this library does not write.</exception>
    public WeightQuantization Kind(string source) => (QuantMethod, Bits, GroupSize) switch
    {
        (Method, 8, -1) => WeightQuantization.Int8,
        (Method, 4, QuantizedLinear.Group) => WeightQuantization.Int4,
        _ => throw new ConfigException(source, $"quantization_config ({QuantMethod}, {Bits} bits, group {GroupSize}) is not supported; " +
                                               $"this library reads \"{Method}\" with 8 bits per channel (group -1) or 4 bits in groups of 32."),
    };
}
