using Multimodal.Common;

namespace Multimodal.QFormer;

/// <summary>transformers v4.45.1 <c>Blip2QFormerSelfOutput</c> and <c>Blip2QFormerOutput</c>
/// (modeling_blip_2.py): LayerNorm(dense(h) + residual). Both have the same keys and maths; upstream
/// keeps two classes only because their input widths differ.</summary>
internal sealed class QFormerResidualOutput : nn.Module
{
    [ComponentName(Name = "dense")] private readonly Linear _dense;
    [ComponentName(Name = "LayerNorm")] private readonly LayerNorm _layerNorm;

    public QFormerResidualOutput(QFormerConfig config, int inputWidth, Device? device = null, ScalarType? dtype = null)
        : base(nameof(QFormerResidualOutput))
    {
        _dense = Uninitialized.Linear(inputWidth, config.HiddenSize, device: device, dtype: dtype);
        _layerNorm = nn.LayerNorm(config.HiddenSize, config.LayerNormEps, device: device, dtype: dtype);
        RegisterComponents();
    }

    public Tensor Forward(Tensor hidden, Tensor residual)
    {
        using var scope = NewDisposeScope();
        return _layerNorm.forward(_dense.forward(hidden).Plus(residual)).MoveToOuterDisposeScope();
    }
}

/// <summary>transformers v4.45.1 <c>Blip2QFormerAttention</c>: attention followed by its residual output.</summary>
internal sealed class QFormerAttention : nn.Module
{
    [ComponentName(Name = "attention")] private readonly QFormerMultiHeadAttention _attention;
    [ComponentName(Name = "output")] private readonly QFormerResidualOutput _output;

    public QFormerAttention(QFormerConfig config, bool isCrossAttention, Device? device = null, ScalarType? dtype = null)
        : base(nameof(QFormerAttention))
    {
        _attention = new QFormerMultiHeadAttention(config, isCrossAttention, device, dtype);
        _output = new QFormerResidualOutput(config, config.HiddenSize, device, dtype);
        RegisterComponents();
    }

    public Tensor Forward(Tensor hidden, Tensor keyValueSource, Tensor? additiveMask)
    {
        using var scope = NewDisposeScope();
        var context = _attention.Forward(hidden, keyValueSource, additiveMask);
        return _output.Forward(context, hidden).MoveToOuterDisposeScope();
    }
}

/// <summary>transformers v4.45.1 <c>Blip2QFormerIntermediate</c>: dense → activation.</summary>
internal sealed class QFormerIntermediate : nn.Module<Tensor, Tensor>
{
    [ComponentName(Name = "dense")] private readonly Linear _dense;
    private readonly Func<Tensor, Tensor> _activation;

    public QFormerIntermediate(QFormerConfig config, Device? device = null, ScalarType? dtype = null)
        : base(nameof(QFormerIntermediate))
    {
        _activation = Common.Activations.Get(config.HiddenAct, "qformer_config.hidden_act");
        _dense = Uninitialized.Linear(config.HiddenSize, config.IntermediateSize, device: device, dtype: dtype);
        RegisterComponents();
    }

    public override Tensor forward(Tensor hidden)
    {
        using var scope = NewDisposeScope();
        return _activation(_dense.forward(hidden)).MoveToOuterDisposeScope();
    }
}
