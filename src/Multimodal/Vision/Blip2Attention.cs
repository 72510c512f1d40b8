using Multimodal.Common;

namespace Multimodal.Vision;

/// <summary>transformers v4.45.1 <c>Blip2Attention</c> (modeling_blip_2.py): bidirectional self-attention
/// with one fused <c>qkv</c> projection. The fused bias is (q_bias, 0, v_bias): EVA's ViT has no key
/// bias, which is why legacy checkpoints store only <c>q_bias</c> and <c>v_bias</c>.</summary>
internal sealed class Blip2Attention : nn.Module<Tensor, Tensor>
{
    [ComponentName(Name = "qkv")] private readonly Linear _qkv;
    [ComponentName(Name = "projection")] private readonly Linear _projection;
    private readonly int _heads;

    public Blip2Attention(Blip2VisionConfig config, Device? device = null, ScalarType? dtype = null)
        : base(nameof(Blip2Attention))
    {
        int d = config.HiddenSize;
        _heads = config.NumAttentionHeads;
        _qkv = Uninitialized.Linear(d, 3 * d, hasBias: config.QkvBias, device: device, dtype: dtype);
        _projection = Uninitialized.Linear(d, d, device: device, dtype: dtype);
        RegisterComponents();
    }

    public override Tensor forward(Tensor hidden)
    {
        using var scope = NewDisposeScope();
        long b = hidden.size(0), t = hidden.size(1), d = hidden.size(2);
        var qkv = _qkv.forward(hidden)
            .view(b, t, 3, _heads, d / _heads)   // (B, T, 3, H, d)
            .permute(2, 0, 3, 1, 4);             // (3, B, H, T, d)
        var context = Attention.ScaledDotProduct(qkv[0], qkv[1], qkv[2], null);
        return _projection.forward(Attention.MergeHeads(context)).MoveToOuterDisposeScope();
    }
}
