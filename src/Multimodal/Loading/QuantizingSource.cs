using Multimodal.Common;

namespace Multimodal.Loading;

/// <summary>A float checkpoint seen as the quantized one a model with quantized layers (see <see cref="QuantizedLinear"/>)
/// expects: each such layer's stored float <c>weight</c> is offered as its integers and a <c>weight_scale</c> beside it,
/// computed when the loader reads them. Quantizing while loading, tensor by tensor, never holds the float language model:
/// the load's peak is the quantized model plus one float weight (and blocks of <see cref="QuantizedLinear.BlockBytes"/>).</summary>
internal sealed class QuantizingSource : ITensorSource
{
    private readonly ITensorSource _inner;
    // published weight name → (kind, published scale name); and back from the scale's name.
    private readonly Dictionary<string, (WeightQuantization Kind, string Scale)> _weights;
    private readonly Dictionary<string, string> _weightOfScale;
    // The half of a quantized pair computed but not yet taken by the loader (it reads weight and scale separately).
    private readonly Dictionary<string, Tensor> _pending = new(StringComparer.Ordinal);

    private QuantizingSource(ITensorSource inner, Dictionary<string, (WeightQuantization, string)> weights)
    {
        _inner = inner;
        _weights = weights;
        _weightOfScale = weights.ToDictionary(kv => kv.Value.Item2, kv => kv.Key, StringComparer.Ordinal);
        // Each scale listed right after its weight: the loader goes in this order, so a scale waits in _pending for one step.
        var tensors = new Dictionary<string, TensorInfo>(StringComparer.Ordinal);
        foreach (var (name, info) in inner.Tensors)
        {
            if (!weights.TryGetValue(name, out var quantized))
            {
                tensors[name] = info;
                continue;
            }
            var (values, type, scales) = QuantizedLinear.Layout(quantized.Item1, info.Shape[0], info.Shape[1]);
            string origin = $"{info.Origin}, quantized to {quantized.Item1} while loading";
            tensors[name] = info with { DType = SafetensorsDType.FromTorch(type), Shape = values, Origin = origin };
            tensors[quantized.Item2] = new TensorInfo(quantized.Item2, "F32", scales, origin);
        }
        Tensors = tensors;
    }

    /// <summary>A quantizing view of a source for a model, or null where no quantized layer of the model is stored in
    /// floats.</summary>
    /// <param name="targets">the model's state (shapes and dtypes; the meta device will do).</param>
    /// <param name="inner">the stored tensors (not owned).</param>
    /// <param name="map">how published names become model keys.</param>
    public static QuantizingSource? For(IDictionary<string, Tensor> targets, ITensorSource inner, WeightMap map)
    {
        var weights = new Dictionary<string, (WeightQuantization, string)>(StringComparer.Ordinal);
        foreach (var (name, info) in inner.Tensors)
        {
            string key = map.ToModelKey(name);
            if (!key.EndsWith(".weight", StringComparison.Ordinal) || !targets.TryGetValue(key, out var target)
                || !targets.TryGetValue(key + "_scale", out var scaleTarget) || info.Shape.Length != 2
                || !SafetensorsDType.IsKnown(info.DType) || SafetensorsDType.ToTorch(info.DType) is not ScalarType stored
                || !(stored is ScalarType.Float32 or ScalarType.Float16 or ScalarType.BFloat16 or ScalarType.Float64))
                continue;
            var kind = QuantizedLinear.KindOf(target.dtype);
            if (kind == WeightQuantization.None || kind == WeightQuantization.Int4 && info.Shape[1] % QuantizedLinear.Group != 0) continue;
            var (values, _, scales) = QuantizedLinear.Layout(kind, info.Shape[0], info.Shape[1]);
            string scale = map.ToPublishedKey(key + "_scale");
            // A layout that does not fit is left for the loader to report as the mismatch it is.
            if (!values.SequenceEqual(target.shape) || !scales.SequenceEqual(scaleTarget.shape) || inner.Tensors.ContainsKey(scale)
                || map.ToModelKey(scale) != key + "_scale")
                continue;
            weights[name] = (kind, scale);
        }
        return weights.Count == 0 ? null : new QuantizingSource(inner, weights);
    }

    /// <inheritdoc/>
    public string Description => _inner.Description;

    /// <inheritdoc/>
    public IReadOnlyDictionary<string, TensorInfo> Tensors { get; }

    /// <inheritdoc/>
    public Tensor Read(string name)
    {
        if (_pending.Remove(name, out var ready)) return ready;
        bool isScale = _weightOfScale.TryGetValue(name, out var weightName);
        weightName ??= name;
        if (!_weights.TryGetValue(weightName, out var entry)) return _inner.Read(name);
        Tensor values, scales;
        using (var stored = _inner.Read(weightName)) (values, scales) = QuantizedLinear.QuantizeWeight(stored, entry.Kind);
        _pending[isScale ? weightName : entry.Scale] = isScale ? values : scales;
        return isScale ? scales : values;
    }

    /// <inheritdoc/>
    /// <remarks>A weight is quantized straight into a CPU destination of its layout (the loading model's own integers);
    /// its scales wait for the loader's next read.</remarks>
    public void CopyTo(string name, Tensor destination)
    {
        if (_weights.TryGetValue(name, out var entry) && !_pending.ContainsKey(name) && destination.device_type == DeviceType.CPU
            && destination.is_contiguous() && destination.dtype == SafetensorsDType.ToTorch(Tensors[name].DType))
        {
            using var stored = _inner.Read(name);
            using var values = destination.view(Tensors[name].Shape);
            var scales = empty(Tensors[entry.Scale].Shape, ScalarType.Float32);
            try
            {
                QuantizedLinear.QuantizeWeight(stored, entry.Kind, values, scales);
            }
            catch
            {
                scales.Dispose();
                throw;
            }
            _pending[entry.Scale] = scales;
            return;
        }
        if (!_weights.ContainsKey(name) && !_weightOfScale.ContainsKey(name))
        {
            _inner.CopyTo(name, destination);
            return;
        }
        using var read = Read(name);
        using (no_grad()) destination.view(read.shape).copy_(read);
    }

    /// <inheritdoc/>
    public bool TryMapInto(string name, Tensor destination) =>
        !_weights.ContainsKey(name) && !_weightOfScale.ContainsKey(name) && _inner.TryMapInto(name, destination);

    /// <inheritdoc/>
    public string? Expected(string key) => _inner.Expected(key);

    /// <summary>Frees what the loader left untaken; the inner source stays open (it is the caller's).</summary>
    public void Dispose()
    {
        foreach (var t in _pending.Values) t.Dispose();
        _pending.Clear();
    }
}
