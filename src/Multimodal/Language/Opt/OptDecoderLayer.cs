using Multimodal.Common;
using Multimodal.Generation;

namespace Multimodal.Language.Opt;

/// <summary>transformers v4.45.1 <c>OPTDecoderLayer</c> (modeling_opt.py): attention and FFN blocks,
/// each residual, with LayerNorm before (<c>do_layer_norm_before</c>, most sizes) or after (350m).</summary>
internal sealed class OptDecoderLayer : nn.Module
{
    [ComponentName(Name = "self_attn")] private readonly OptAttention _selfAttn;
    [ComponentName(Name = "self_attn_layer_norm")] private readonly LayerNorm _selfAttnLayerNorm;
    [ComponentName(Name = "fc1")] private readonly Linear _fc1;
    [ComponentName(Name = "fc2")] private readonly Linear _fc2;
    [ComponentName(Name = "final_layer_norm")] private readonly LayerNorm _finalLayerNorm;
    private readonly Func<Tensor, Tensor> _activation;
    private readonly bool _normBefore;

    public OptDecoderLayer(OptConfig config, int layerIndex, Device? device = null, ScalarType? dtype = null)
        : base(nameof(OptDecoderLayer))
    {
        int d = config.HiddenSize;
        _normBefore = config.DoLayerNormBefore;
        _activation = Activations.Get(config.ActivationFunction, "text_config.activation_function");
        _selfAttn = new OptAttention(config, layerIndex, device, dtype);
        _selfAttnLayerNorm = nn.LayerNorm(d, 1e-5, config.LayerNormElementwiseAffine, device: device, dtype: dtype);
        _fc1 = Uninitialized.Linear(d, config.FfnDim, hasBias: config.EnableBias, device: device, dtype: dtype);
        _fc2 = Uninitialized.Linear(config.FfnDim, d, hasBias: config.EnableBias, device: device, dtype: dtype);
        _finalLayerNorm = nn.LayerNorm(d, 1e-5, config.LayerNormElementwiseAffine, device: device, dtype: dtype);
        RegisterComponents();
    }

    public Tensor Forward(Tensor hidden, Tensor mask, KvCache? cache)
    {
        using var scope = NewDisposeScope();
        var residual = hidden;
        if (_normBefore) hidden = _selfAttnLayerNorm.forward(hidden);
        hidden = residual.Plus(_selfAttn.Forward(hidden, mask, cache));
        if (!_normBefore) hidden = _selfAttnLayerNorm.forward(hidden);

        residual = hidden;
        if (_normBefore) hidden = _finalLayerNorm.forward(hidden);
        hidden = residual.Plus(_fc2.Apply(_activation(_fc1.Apply(hidden))));
        if (!_normBefore) hidden = _finalLayerNorm.forward(hidden);
        return hidden.MoveToOuterDisposeScope();
    }
}
