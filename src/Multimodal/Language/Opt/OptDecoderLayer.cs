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
    private readonly bool _relu;
    private const double Eps = 1e-5;

    public OptDecoderLayer(OptConfig config, int layerIndex, Device? device = null, ScalarType? dtype = null)
        : base(nameof(OptDecoderLayer))
    {
        int d = config.HiddenSize;
        _normBefore = config.DoLayerNormBefore;
        _activation = Activations.Get(config.ActivationFunction, "text_config.activation_function");
        _relu = config.ActivationFunction == "relu";
        _selfAttn = new OptAttention(config, layerIndex, device, dtype);
        _selfAttnLayerNorm = nn.LayerNorm(d, Eps, config.LayerNormElementwiseAffine, device: device, dtype: dtype);
        _fc1 = Uninitialized.Linear(d, config.FfnDim, hasBias: config.EnableBias, device: device, dtype: dtype);
        _fc2 = Uninitialized.Linear(config.FfnDim, d, hasBias: config.EnableBias, device: device, dtype: dtype);
        _finalLayerNorm = nn.LayerNorm(d, Eps, config.LayerNormElementwiseAffine, device: device, dtype: dtype);
        RegisterComponents();
    }

    public Tensor Forward(Tensor hidden, Tensor mask, KvCache? cache)
    {
        if (cache is not null && _normBefore && _relu && hidden.dim() == 3 && hidden.size(1) == 1 && DecodeRows.Takes(hidden)
            && _selfAttn.TakesDecodeStep(hidden, mask, cache))
            return DecodeStep(hidden, mask, cache);
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

    // One new position per row, float32 on the CPU, pre-LN with ReLU (every published OPT but 350m): the computation above
    // with the norms, residual adds and ReLU in our own code (DecodeRows) and the attention reading the cache in place
    // (OptAttention.DecodeStep), instead of ~20 libtorch calls that each cost more than their work on rows this small.
    private Tensor DecodeStep(Tensor hidden, Tensor mask, KvCache cache)
    {
        using var scope = NewDisposeScope();
        var attended = _selfAttn.DecodeStep(Norm(hidden, _selfAttnLayerNorm), mask, cache);
        Check(DecodeRows.AddInPlace(attended, hidden));                                   // residual + attention
        var inner = _fc1.Apply(Norm(attended, _finalLayerNorm));
        Check(DecodeRows.ReluInPlace(inner));
        var output = _fc2.Apply(inner);
        Check(DecodeRows.AddInPlace(output, attended));                                   // residual + MLP
        return output.MoveToOuterDisposeScope();
    }

    private static Tensor Norm(Tensor x, LayerNorm norm) =>
        DecodeRows.LayerNorm(x, norm.weight, norm.bias, Eps) ?? throw new InvalidOperationException("A decode step's row left the CPU float32 path.");

    // The products' outputs are fresh contiguous float32 rows like their inputs; anything else is a bug, not a fallback.
    private static void Check(bool done)
    {
        if (!done) throw new InvalidOperationException("A decode step's row left the CPU float32 path.");
    }
}
