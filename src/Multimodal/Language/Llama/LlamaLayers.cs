using Multimodal.Common;
using Multimodal.Generation;

namespace Multimodal.Language.Llama;

/// <summary>The sizes a LLaMA decoder layer is built from (<see cref="LlamaConfig"/>'s, or IDEFICS').</summary>
/// <param name="Hidden">model width.</param>
/// <param name="Heads">query heads.</param>
/// <param name="KvHeads">key/value heads (fewer: grouped-query attention).</param>
/// <param name="HeadDim">width of one head.</param>
/// <param name="Intermediate">MLP width.</param>
/// <param name="Act">MLP activation.</param>
/// <param name="Eps">RMSNorm epsilon.</param>
/// <param name="AttentionBias">q/k/v/o biases.</param>
/// <param name="MlpBias">gate/up/down biases.</param>
internal sealed record LlamaDims(int Hidden, int Heads, int KvHeads, int HeadDim, int Intermediate, string Act, double Eps,
    bool AttentionBias = false, bool MlpBias = false)
{
    /// <summary>The dims of a <see cref="LlamaConfig"/>.</summary>
    public static LlamaDims Of(LlamaConfig c) => new(c.HiddenSize, c.NumAttentionHeads, c.NumKeyValueHeads ?? c.NumAttentionHeads,
        c.HeadDim ?? c.HiddenSize / c.NumAttentionHeads, c.IntermediateSize, c.HiddenAct, c.RmsNormEps, c.AttentionBias, c.MlpBias);
}

/// <summary>transformers <c>LlamaMLP</c> / v4.44.2 <c>IdeficsMLP</c> (modeling_idefics.py): SwiGLU,
/// down(act(gate(x)) · up(x)), no biases.</summary>
internal sealed class LlamaMlp : nn.Module<Tensor, Tensor>
{
    [ComponentName(Name = "gate_proj")] private readonly Linear _gateProj;
    [ComponentName(Name = "down_proj")] private readonly Linear _downProj;
    [ComponentName(Name = "up_proj")] private readonly Linear _upProj;
    private readonly Func<Tensor, Tensor> _activation;

    public LlamaMlp(int hidden, int intermediate, string act, Device? device, ScalarType? dtype, bool bias = false) : base(nameof(LlamaMlp))
    {
        _activation = Activations.Get(act, "hidden_act");
        _gateProj = Uninitialized.Linear(hidden, intermediate, hasBias: bias, device: device, dtype: dtype);
        _downProj = Uninitialized.Linear(intermediate, hidden, hasBias: bias, device: device, dtype: dtype);
        _upProj = Uninitialized.Linear(hidden, intermediate, hasBias: bias, device: device, dtype: dtype);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var gateUp = LinearExtensions.ApplyEach(x, _gateProj, _upProj);
        return _downProj.Apply(_activation(gateUp[0]) * gateUp[1]).MoveToOuterDisposeScope();
    }
}

/// <summary>transformers v4.44.2 <c>IdeficsAttention</c> (LLaMA attention, modeling_idefics.py): q/k/v/o
/// without biases; as self-attention with rotary positions (rotate-half pairs, base 10000), as
/// cross-attention with keys and values from the image features (width <c>kvWidth</c>) and no rotary.
/// With <c>qk_layer_norms</c>, q and k go through per-head RMSNorms after the rotary and the cache.</summary>
internal sealed class LlamaAttention : nn.Module
{
    [ComponentName(Name = "q_proj")] private readonly Linear _qProj;
    [ComponentName(Name = "k_proj")] private readonly Linear _kProj;
    [ComponentName(Name = "v_proj")] private readonly Linear _vProj;
    [ComponentName(Name = "o_proj")] private readonly Linear _oProj;
    [ComponentName(Name = "q_layer_norm")] private readonly LlamaRmsNorm? _qLayerNorm;
    [ComponentName(Name = "k_layer_norm")] private readonly LlamaRmsNorm? _kLayerNorm;
    private readonly int _heads;
    private readonly int _kvHeads;
    private readonly int _layerIndex;

    /// <summary>IDEFICS' attention: as many key/value heads as query heads, head width = width / heads, no biases.</summary>
    public LlamaAttention(int hidden, int heads, int kvWidth, bool qkNorms, double eps, int layerIndex, Device? device, ScalarType? dtype)
        : this(new LlamaDims(hidden, heads, heads, hidden / heads, 0, "silu", eps), kvWidth, qkNorms, layerIndex, device, dtype)
    {
    }

    /// <summary>Attention of the given dims; keys and values read <paramref name="kvWidth"/>-wide inputs.</summary>
    public LlamaAttention(LlamaDims dims, int kvWidth, bool qkNorms, int layerIndex, Device? device, ScalarType? dtype)
        : base(nameof(LlamaAttention))
    {
        _heads = dims.Heads;
        _kvHeads = dims.KvHeads;
        _layerIndex = layerIndex;
        int q = dims.Heads * dims.HeadDim, kv = dims.KvHeads * dims.HeadDim;
        _qProj = Uninitialized.Linear(dims.Hidden, q, hasBias: dims.AttentionBias, device: device, dtype: dtype);
        _kProj = Uninitialized.Linear(kvWidth, kv, hasBias: dims.AttentionBias, device: device, dtype: dtype);
        _vProj = Uninitialized.Linear(kvWidth, kv, hasBias: dims.AttentionBias, device: device, dtype: dtype);
        _oProj = Uninitialized.Linear(q, dims.Hidden, hasBias: dims.AttentionBias, device: device, dtype: dtype);
        if (qkNorms)
        {
            _qLayerNorm = new LlamaRmsNorm(dims.HeadDim, dims.Eps, device, dtype);
            _kLayerNorm = new LlamaRmsNorm(dims.HeadDim, dims.Eps, device, dtype);
        }
        RegisterComponents();
    }

    /// <summary>Self-attention. cos/sin (B, 1, Tnew, d) for the new positions; mask additive (B, 1, Tnew, Tk).</summary>
    public Tensor SelfAttention(Tensor hidden, Tensor mask, Tensor cos, Tensor sin, KvCache? cache)
    {
        using var scope = NewDisposeScope();
        var projected = LinearExtensions.ApplyEach(hidden, _qProj, _kProj, _vProj);
        var q = Rotary.Apply(Attention.SplitHeads(projected[0], _heads), cos, sin);
        var k = Rotary.Apply(Attention.SplitHeads(projected[1], _kvHeads), cos, sin);
        var v = Attention.SplitHeads(projected[2], _kvHeads);
        if (cache is not null) (k, v) = cache.Update(_layerIndex, k, v);
        if (_qLayerNorm is not null) { q = _qLayerNorm.forward(q); k = _kLayerNorm!.forward(k); }
        if (_kvHeads != _heads)
        {
            // Grouped-query attention (upstream repeat_kv): query head h reads key/value head h / (heads / kv heads).
            k = k.repeat_interleave(_heads / _kvHeads, 1);
            v = v.repeat_interleave(_heads / _kvHeads, 1);
        }
        return _oProj.Apply(Attention.MergeHeads(Attention.ScaledDotProduct(q, k, v, mask))).MoveToOuterDisposeScope();
    }

    /// <summary>Keys and values of the image features (B, h, S, d), normalised when q/k norms are on:
    /// constant for a request, computed once.</summary>
    public (Tensor Keys, Tensor Values) MediaKeysValues(Tensor image)
    {
        using var scope = NewDisposeScope();
        var k = Attention.SplitHeads(_kProj.Apply(image), _heads);
        if (_kLayerNorm is not null) k = _kLayerNorm.forward(k);
        var v = Attention.SplitHeads(_vProj.Apply(image), _heads);
        return (k.MoveToOuterDisposeScope(), v.MoveToOuterDisposeScope());
    }

    /// <summary>Cross-attention to precomputed media keys/values; mask additive (B, 1, Tnew, S).</summary>
    public Tensor CrossAttention(Tensor hidden, Tensor keys, Tensor values, Tensor mask)
    {
        using var scope = NewDisposeScope();
        var q = Attention.SplitHeads(_qProj.Apply(hidden), _heads);
        if (_qLayerNorm is not null) q = _qLayerNorm.forward(q);
        return _oProj.Apply(Attention.MergeHeads(Attention.ScaledDotProduct(q, keys, values, mask))).MoveToOuterDisposeScope();
    }
}

/// <summary>transformers v4.44.2 <c>IdeficsDecoderLayer</c> (a LLaMA decoder layer): pre-RMSNorm
/// self-attention and SwiGLU MLP, each residual.</summary>
internal sealed class LlamaDecoderLayer : nn.Module
{
    [ComponentName(Name = "self_attn")] private readonly LlamaAttention _selfAttn;
    [ComponentName(Name = "mlp")] private readonly LlamaMlp _mlp;
    [ComponentName(Name = "input_layernorm")] private readonly LlamaRmsNorm _inputLayernorm;
    [ComponentName(Name = "post_attention_layernorm")] private readonly LlamaRmsNorm _postAttentionLayernorm;

    /// <summary>IDEFICS' decoder layer (no grouped-query attention, no biases).</summary>
    public LlamaDecoderLayer(int hidden, int heads, int intermediate, string act, double eps, int layerIndex, Device? device, ScalarType? dtype)
        : this(new LlamaDims(hidden, heads, heads, hidden / heads, intermediate, act, eps), layerIndex, device, dtype)
    {
    }

    /// <summary>A decoder layer of the given dims.</summary>
    public LlamaDecoderLayer(LlamaDims dims, int layerIndex, Device? device, ScalarType? dtype) : base(nameof(LlamaDecoderLayer))
    {
        _selfAttn = new LlamaAttention(dims, dims.Hidden, qkNorms: false, layerIndex, device, dtype);
        _mlp = new LlamaMlp(dims.Hidden, dims.Intermediate, dims.Act, device, dtype, dims.MlpBias);
        _inputLayernorm = new LlamaRmsNorm(dims.Hidden, dims.Eps, device, dtype);
        _postAttentionLayernorm = new LlamaRmsNorm(dims.Hidden, dims.Eps, device, dtype);
        RegisterComponents();
    }

    public Tensor Forward(Tensor hidden, Tensor mask, Tensor cos, Tensor sin, KvCache? cache)
    {
        using var scope = NewDisposeScope();
        hidden = hidden.Plus(_selfAttn.SelfAttention(_inputLayernorm.forward(hidden), mask, cos, sin, cache));
        hidden = hidden.Plus(_mlp.forward(_postAttentionLayernorm.forward(hidden)));
        return hidden.MoveToOuterDisposeScope();
    }
}
