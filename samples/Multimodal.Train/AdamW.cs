using TorchSharp;
using static TorchSharp.torch;

namespace Multimodal.Train;

/// <summary>AdamW (decoupled weight decay) written out with explicitly owned scalars. TorchSharp 0.107's
/// optim.AdamW failed here after a few hundred steps with corrupted native scalars ("Unknown scalar
/// type"): it passes temporary Scalars that a collection can finalize while libtorch reads them (see the
/// library's Common/Scalars.cs). This one keeps every scalar alive for the whole step, including the alpha
/// of 1 that TorchSharp's one-argument <c>add_</c> would create.</summary>
public sealed class AdamW(IEnumerable<TorchSharp.Modules.Parameter> parameters, double lr, double weightDecay,
    double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8) : IDisposable
{
    private readonly List<(TorchSharp.Modules.Parameter P, Tensor M, Tensor V)> _state =
        parameters.DistinctBy(p => p.Handle).Select(p => (p, zeros_like(p).DetachFromDisposeScope(), zeros_like(p).DetachFromDisposeScope())).ToList();
    private int _t;

    public double LearningRate { get; set; } = lr;

    public void ZeroGrad()
    {
        foreach (var (p, _, _) in _state) p.grad?.zero_();
    }

    public void Step()
    {
        _t++;
        double bc1 = 1 - Math.Pow(beta1, _t), bc2 = 1 - Math.Pow(beta2, _t);
        using var noGrad = no_grad();
        using var b1 = beta1.ToScalar();
        using var oneMinusB1 = (1 - beta1).ToScalar();
        using var b2 = beta2.ToScalar();
        using var oneMinusB2 = (1 - beta2).ToScalar();
        using var decay = (1 - LearningRate * weightDecay).ToScalar();
        using var step = (-LearningRate / bc1).ToScalar();
        using var correction = (1 / Math.Sqrt(bc2)).ToScalar();
        using var epsilon = eps.ToScalar();
        using var one = 1.0.ToScalar();
        foreach (var (p, m, v) in _state)
        {
            var g = p.grad;
            if (g is null) continue;
            using var scope = NewDisposeScope();
            m.mul_(b1).add_(g, oneMinusB1);
            v.mul_(b2).addcmul_(g, g, oneMinusB2);
            var denom = v.sqrt().mul_(correction).add_(epsilon, one);
            p.mul_(decay).addcdiv_(m, denom, step);
        }
    }

    public void Dispose()
    {
        foreach (var (_, m, v) in _state) { m.Dispose(); v.Dispose(); }
    }
}
