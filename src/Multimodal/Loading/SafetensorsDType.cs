
namespace Multimodal.Loading;

/// <summary>The dtype names of the safetensors format and their element sizes.</summary>
/// <remarks>Every dtype of the spec is readable at the header level; those TorchSharp 0.107 has no
/// <see cref="ScalarType"/> for (unsigned 16/32/64-bit ints, FP8) can be read as raw bytes only.</remarks>
public static class SafetensorsDType
{
    private static readonly Dictionary<string, (int Size, ScalarType? Torch)> Known = new()
    {
        ["F64"] = (8, ScalarType.Float64),
        ["F32"] = (4, ScalarType.Float32),
        ["F16"] = (2, ScalarType.Float16),
        ["BF16"] = (2, ScalarType.BFloat16),
        ["I64"] = (8, ScalarType.Int64),
        ["I32"] = (4, ScalarType.Int32),
        ["I16"] = (2, ScalarType.Int16),
        ["I8"] = (1, ScalarType.Int8),
        ["U8"] = (1, ScalarType.Byte),
        ["BOOL"] = (1, ScalarType.Bool),
        ["U16"] = (2, null),
        ["U32"] = (4, null),
        ["U64"] = (8, null),
        ["F8_E4M3"] = (1, null),
        ["F8_E5M2"] = (1, null),
    };

    /// <summary>Whether <paramref name="name"/> is a dtype of the safetensors spec.</summary>
    public static bool IsKnown(string name) => Known.ContainsKey(name);

    /// <summary>Bytes per element of a known dtype.</summary>
    public static int SizeOf(string name) => Known[name].Size;

    /// <summary>The TorchSharp dtype of a safetensors dtype, or null where TorchSharp has none.</summary>
    public static ScalarType? ToTorch(string name) => Known[name].Torch;

    /// <summary>The safetensors name of a TorchSharp dtype.</summary>
    public static string FromTorch(ScalarType type) =>
        Known.FirstOrDefault(kv => kv.Value.Torch == type).Key
        ?? throw new NotSupportedException($"dtype {type} has no safetensors name.");

    /// <summary>The dtype names of the spec, for messages.</summary>
    public static IEnumerable<string> Names => Known.Keys;
}
