using Multimodal.Common;

namespace Multimodal.Vision;

/// <summary>transformers v4.45.1 <c>Blip2EncoderLayer</c> (modeling_blip_2.py): pre-LN block,
/// h += attn(LN1(h)); h += mlp(LN2(h)).</summary>
internal sealed class Blip2EncoderLayer : nn.Module<Tensor, Tensor>
{
    [ComponentName(Name = "self_attn")] private readonly Blip2Attention _selfAttn;
    [ComponentName(Name = "layer_norm1")] private readonly LayerNorm _layerNorm1;
    [ComponentName(Name = "mlp")] private readonly Blip2Mlp _mlp;
    [ComponentName(Name = "layer_norm2")] private readonly LayerNorm _layerNorm2;

    public Blip2EncoderLayer(Blip2VisionConfig config, Device? device = null, ScalarType? dtype = null)
        : base(nameof(Blip2EncoderLayer))
    {
        _selfAttn = new Blip2Attention(config, device, dtype);
        _layerNorm1 = nn.LayerNorm(config.HiddenSize, config.LayerNormEps, device: device, dtype: dtype);
        _mlp = new Blip2Mlp(config, device, dtype);
        _layerNorm2 = nn.LayerNorm(config.HiddenSize, config.LayerNormEps, device: device, dtype: dtype);
        RegisterComponents();
    }

    public override Tensor forward(Tensor hidden)
    {
        using var scope = NewDisposeScope();
        hidden = hidden.Plus(_selfAttn.forward(_layerNorm1.forward(hidden)));
        hidden = hidden.Plus(_mlp.forward(_layerNorm2.forward(hidden)));
        return hidden.MoveToOuterDisposeScope();
    }
}
