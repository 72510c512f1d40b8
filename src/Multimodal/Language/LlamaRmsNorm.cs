using Multimodal.Common;

namespace Multimodal.Language;

/// <summary>transformers <c>LlamaRMSNorm</c> / v4.44.2 <c>IdeficsRMSNorm</c>: x · rsqrt(mean(x²) + eps)
/// computed in float32, scaled by the weight (no bias, no mean subtraction). T5's <c>T5LayerNorm</c> is the same
/// normalization, so T5 uses it too.</summary>
internal sealed class LlamaRmsNorm : nn.Module<Tensor, Tensor>
{
    [ComponentName(Name = "weight")] private readonly Parameter _weight;
    private readonly double _eps;

    public LlamaRmsNorm(long dim, double eps, Device? device, ScalarType? dtype) : base(nameof(LlamaRmsNorm))
    {
        _eps = eps;
        _weight = new Parameter(ones(dim, dtype: dtype, device: device), requires_grad: false);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var f = x.to(ScalarType.Float32);
        var normed = f.mul(f.Pow(2).mean([-1], keepdim: true).Plus(_eps).rsqrt());
        return (_weight * normed.to(_weight.dtype)).MoveToOuterDisposeScope();
    }
}
