using Multimodal.Common;
using Multimodal.Generation;

namespace Multimodal.Language.Opt;

/// <summary>transformers v4.45.1 <c>OPTAttention</c> (modeling_opt.py): causal self-attention with
/// separate projections. Upstream pre-scales q by 1/√d; scaled dot-product attention applies the same
/// factor, so q goes in unscaled.</summary>
internal sealed class OptAttention : nn.Module
{
    [ComponentName(Name = "k_proj")] private readonly Linear _kProj;
    [ComponentName(Name = "v_proj")] private readonly Linear _vProj;
    [ComponentName(Name = "q_proj")] private readonly Linear _qProj;
    [ComponentName(Name = "out_proj")] private readonly Linear _outProj;
    private readonly int _heads;
    private readonly int _layerIndex;

    public OptAttention(OptConfig config, int layerIndex, Device? device = null, ScalarType? dtype = null)
        : base(nameof(OptAttention))
    {
        int d = config.HiddenSize;
        _heads = config.NumAttentionHeads;
        _layerIndex = layerIndex;
        _kProj = Uninitialized.Linear(d, d, hasBias: config.EnableBias, device: device, dtype: dtype);
        _vProj = Uninitialized.Linear(d, d, hasBias: config.EnableBias, device: device, dtype: dtype);
        _qProj = Uninitialized.Linear(d, d, hasBias: config.EnableBias, device: device, dtype: dtype);
        _outProj = Uninitialized.Linear(d, d, hasBias: config.EnableBias, device: device, dtype: dtype);
        RegisterComponents();
    }

    /// <param name="hidden">(B, Tnew, D).</param>
    /// <param name="mask">additive (B, 1, Tnew, Tpast + Tnew).</param>
    /// <param name="cache">extended with this layer's new keys and values, when given.</param>
    public Tensor Forward(Tensor hidden, Tensor mask, KvCache? cache)
    {
        using var scope = NewDisposeScope();
        var projected = LinearExtensions.ApplyEach(hidden, _qProj, _kProj, _vProj);
        var q = Attention.SplitHeads(projected[0], _heads);           // (B, H, Tnew, d)
        var k = Attention.SplitHeads(projected[1], _heads);
        var v = Attention.SplitHeads(projected[2], _heads);
        if (cache is not null) (k, v) = cache.Update(_layerIndex, k, v); // (B, H, Tpast + Tnew, d)
        var context = Attention.ScaledDotProduct(q, k, v, mask);
        return _outProj.Apply(Attention.MergeHeads(context)).MoveToOuterDisposeScope();
    }

    /// <summary>Whether <see cref="DecodeStep"/> takes this step whole, checked before the cache is touched: the attention
    /// kernel takes these rows over the cached positions and the new one (<see cref="DecodeAttention.TakesRows"/>).</summary>
    public bool TakesDecodeStep(Tensor hidden, Tensor mask, KvCache cache) =>
        hidden.size(-1) % _heads == 0
        && DecodeAttention.TakesRows(hidden.size(0), _heads, hidden.size(-1) / _heads, cache.LengthOf(_layerIndex) + 1, mask);

    /// <summary><see cref="Forward"/> for a step <see cref="TakesDecodeStep"/> takes: the new keys and values go into the
    /// cache's storage as rows and the attention reads it there, the heads never split or merged.</summary>
    /// <param name="hidden">(B, 1, D) float32.</param>
    /// <param name="mask">additive (B or 1, 1, 1, Tpast + 1).</param>
    /// <param name="cache">extended with this layer's new keys and values.</param>
    /// <returns>(B, 1, D), a tensor the caller owns.</returns>
    public Tensor DecodeStep(Tensor hidden, Tensor mask, KvCache cache)
    {
        using var scope = NewDisposeScope();
        var projected = LinearExtensions.ApplyEach(hidden, _qProj, _kProj, _vProj);
        var (keys, values, length) = cache.AppendRows(_layerIndex, projected[1], projected[2], _heads);
        if (!DecodeAttention.TryComputeRows(projected[0], _heads, keys, values, length, mask, out var context))
            throw new InvalidOperationException("The attention kernel refused a decode step it had been checked to take.");
        return _outProj.Apply(context).MoveToOuterDisposeScope();
    }
}
