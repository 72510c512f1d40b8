namespace Multimodal.Loading;

/// <summary>One safetensors file as an <see cref="ITensorSource"/>.</summary>
public sealed class SingleSafetensors : ITensorSource
{
    private readonly SafetensorsFile _file;

    /// <summary>Opens and validates the file.</summary>
    public SingleSafetensors(string path)
    {
        _file = SafetensorsFile.Open(path);
        Tensors = _file.Entries.ToDictionary(kv => kv.Key, kv => new TensorInfo(kv.Key, kv.Value.DType, kv.Value.Shape, Path.GetFileName(path)));
    }

    /// <inheritdoc/>
    public string Description => _file.Path;

    /// <inheritdoc/>
    public IReadOnlyDictionary<string, TensorInfo> Tensors { get; }

    /// <inheritdoc/>
    public Tensor Read(string name) => _file.Read(name);

    /// <inheritdoc/>
    public void CopyTo(string name, Tensor destination) => _file.CopyTo(_file.Entries[name], destination);

    /// <inheritdoc/>
    public bool TryMapInto(string name, Tensor destination) => _file.TryMapInto(_file.Entries[name], destination);

    /// <inheritdoc/>
    public void Dispose() => _file.Dispose();
}
