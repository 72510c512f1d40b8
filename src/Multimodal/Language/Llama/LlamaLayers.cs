using Multimodal.Common;
using Multimodal.Generation;

namespace Multimodal.Language.Llama;

/// <summary>transformers <c>LlamaMLP</c> / v4.44.2 <c>IdeficsMLP</c> (modeling_idefics.py): SwiGLU,
/// down(act(gate(x)) · up(x)), no biases.</summary>
internal sealed class LlamaMlp : nn.Module<Tensor, Tensor>
{
    [ComponentName(Name = "gate_proj")] private readonly Linear _gateProj;
    [ComponentName(Name = "down_proj")] private readonly Linear _downProj;
    [ComponentName(Name = "up_proj")] private readonly Linear _upProj;
    private readonly Func<Tensor, Tensor> _activation;

    public LlamaMlp(int hidden, int intermediate, string act, Device? device, ScalarType? dtype) : base(nameof(LlamaMlp))
    {
        _activation = Activations.Get(act, "hidden_act");
        _gateProj = Uninitialized.Linear(hidden, intermediate, hasBias: false, device: device, dtype: dtype);
        _downProj = Uninitialized.Linear(intermediate, hidden, hasBias: false, device: device, dtype: dtype);
        _upProj = Uninitialized.Linear(hidden, intermediate, hasBias: false, device: device, dtype: dtype);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        return _downProj.Apply(_activation(_gateProj.Apply(x)) * _upProj.Apply(x)).MoveToOuterDisposeScope();
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
    private readonly int _layerIndex;

    public LlamaAttention(int hidden, int heads, int kvWidth, bool qkNorms, double eps, int layerIndex, Device? device, ScalarType? dtype)
        : base(nameof(LlamaAttention))
    {
        _heads = heads;
        _layerIndex = layerIndex;
        _qProj = Uninitialized.Linear(hidden, hidden, hasBias: false, device: device, dtype: dtype);
        _kProj = Uninitialized.Linear(kvWidth, hidden, hasBias: false, device: device, dtype: dtype);
        _vProj = Uninitialized.Linear(kvWidth, hidden, hasBias: false, device: device, dtype: dtype);
        _oProj = Uninitialized.Linear(hidden, hidden, hasBias: false, device: device, dtype: dtype);
        if (qkNorms)
        {
            _qLayerNorm = new LlamaRmsNorm(hidden / heads, eps, device, dtype);
            _kLayerNorm = new LlamaRmsNorm(hidden / heads, eps, device, dtype);
        }
        RegisterComponents();
    }

    /// <summary>Self-attention. cos/sin (B, 1, Tnew, d) for the new positions; mask additive (B, 1, Tnew, Tk).</summary>
    public Tensor SelfAttention(Tensor hidden, Tensor mask, Tensor cos, Tensor sin, KvCache? cache)
    {
        using var scope = NewDisposeScope();
        var q = Rotary.Apply(Attention.SplitHeads(_qProj.Apply(hidden), _heads), cos, sin);
        var k = Rotary.Apply(Attention.SplitHeads(_kProj.Apply(hidden), _heads), cos, sin);
        var v = Attention.SplitHeads(_vProj.Apply(hidden), _heads);
        if (cache is not null) (k, v) = cache.Update(_layerIndex, k, v);
        if (_qLayerNorm is not null) { q = _qLayerNorm.forward(q); k = _kLayerNorm!.forward(k); }
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

    public LlamaDecoderLayer(int hidden, int heads, int intermediate, string act, double eps, int layerIndex, Device? device, ScalarType? dtype)
        : base(nameof(LlamaDecoderLayer))
    {
        _selfAttn = new LlamaAttention(hidden, heads, hidden, qkNorms: false, eps, layerIndex, device, dtype);
        _mlp = new LlamaMlp(hidden, intermediate, act, device, dtype);
        _inputLayernorm = new LlamaRmsNorm(hidden, eps, device, dtype);
        _postAttentionLayernorm = new LlamaRmsNorm(hidden, eps, device, dtype);
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
