
namespace Multimodal.Loading;

/// <summary>A stored tensor: its published name, safetensors dtype name, shape and the file it lives in.</summary>
public sealed record TensorInfo(string Name, string DType, long[] Shape, string Origin);

/// <summary>Named tensors stored somewhere (one safetensors file, a sharded folder, a composition of
/// several sources), read one at a time.</summary>
public interface ITensorSource : IDisposable
{
    /// <summary>Where the tensors come from, for messages.</summary>
    string Description { get; }

    /// <summary>Every stored tensor, by published name.</summary>
    IReadOnlyDictionary<string, TensorInfo> Tensors { get; }

    /// <summary>Reads a tensor into a new CPU tensor of its stored dtype.</summary>
    Tensor Read(string name);

    /// <summary>Copies a tensor into <paramref name="destination"/>, a contiguous tensor of the same
    /// element count on any device and of any floating dtype, streaming it in bounded chunks.</summary>
    void CopyTo(string name, Tensor destination);

    /// <summary>Makes <paramref name="destination"/> use the stored bytes in place instead of a copy, where the source
    /// can (see <see cref="SafetensorsFile.TryMapInto"/>); false when it cannot, and the caller copies.</summary>
    bool TryMapInto(string name, Tensor destination) => false;

    /// <summary>Where a model key that none of the tensors provides would have been published — the file's own key and
    /// the file — for a source whose names differ from the model's; null where they do not.</summary>
    string? Expected(string key) => null;
}
