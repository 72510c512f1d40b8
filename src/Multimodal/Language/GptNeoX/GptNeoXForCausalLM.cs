using Multimodal.Common;
using Multimodal.Generation;

namespace Multimodal.Language.GptNeoX;

/// <summary>transformers v4.45.1 <c>GPTNeoXAttention</c> (modeling_gpt_neox.py): one
/// <c>query_key_value</c> projection whose rows are grouped PER HEAD (q_h, k_h, v_h for head h, not
/// [Q; K; V] blocks), rotary on the first <c>rotary_pct</c> of each head, scores q·k/√d.</summary>
internal sealed class GptNeoXAttention : nn.Module
{
    [ComponentName(Name = "query_key_value")] private readonly Linear _queryKeyValue;
    [ComponentName(Name = "dense")] private readonly Linear _dense;
    private readonly int _heads;
    private readonly int _layerIndex;

    public GptNeoXAttention(GptNeoXConfig config, int layerIndex, Device? device, ScalarType? dtype) : base(nameof(GptNeoXAttention))
    {
        _heads = config.NumAttentionHeads;
        _layerIndex = layerIndex;
        _queryKeyValue = Uninitialized.Linear(config.HiddenSize, 3 * config.HiddenSize, hasBias: config.AttentionBias, device: device, dtype: dtype);
        _dense = Uninitialized.Linear(config.HiddenSize, config.HiddenSize, hasBias: config.AttentionBias, device: device, dtype: dtype);
        RegisterComponents();
    }

    public Tensor Forward(Tensor hidden, Tensor mask, Tensor cos, Tensor sin, KvCache? cache)
    {
        using var scope = NewDisposeScope();
        long b = hidden.size(0), t = hidden.size(1), d = hidden.size(2) / _heads;
        var qkv = _queryKeyValue.Apply(hidden).view(b, t, _heads, 3 * d).permute(0, 2, 1, 3);  // (B, H, T, 3d)
        var q = Rotary.Apply(qkv.narrow(-1, 0, d), cos, sin);
        var k = Rotary.Apply(qkv.narrow(-1, d, d), cos, sin);
        var v = qkv.narrow(-1, 2 * d, d);
        if (cache is not null) (k, v) = cache.Update(_layerIndex, k.contiguous(), v.contiguous());
        var context = Attention.ScaledDotProduct(q, k, v, mask);
        return _dense.Apply(Attention.MergeHeads(context)).MoveToOuterDisposeScope();
    }
}

/// <summary>transformers v4.45.1 <c>GPTNeoXMLP</c>: dense_h_to_4h → activation → dense_4h_to_h, with biases.</summary>
internal sealed class GptNeoXMlp : nn.Module<Tensor, Tensor>
{
    [ComponentName(Name = "dense_h_to_4h")] private readonly Linear _denseHTo4h;
    [ComponentName(Name = "dense_4h_to_h")] private readonly Linear _dense4hToH;
    private readonly Func<Tensor, Tensor> _activation;

    public GptNeoXMlp(GptNeoXConfig config, Device? device, ScalarType? dtype) : base(nameof(GptNeoXMlp))
    {
        _activation = Activations.Get(config.HiddenAct, "hidden_act");
        _denseHTo4h = Uninitialized.Linear(config.HiddenSize, config.IntermediateSize, device: device, dtype: dtype);
        _dense4hToH = Uninitialized.Linear(config.IntermediateSize, config.HiddenSize, device: device, dtype: dtype);
        RegisterComponents();
    }

    public override Tensor forward(Tensor hidden)
    {
        using var scope = NewDisposeScope();
        return _dense4hToH.Apply(_activation(_denseHTo4h.Apply(hidden))).MoveToOuterDisposeScope();
    }
}

/// <summary>transformers v4.45.1 <c>GPTNeoXLayer</c>: parallel residual x + attn(ln1(x)) + mlp(ln2(x)), or
/// sequential a = x + attn(ln1(x)); a + mlp(ln2(a)) (<c>use_parallel_residual = false</c>).</summary>
internal sealed class GptNeoXLayer : nn.Module
{
    [ComponentName(Name = "input_layernorm")] private readonly LayerNorm _inputLayernorm;
    [ComponentName(Name = "post_attention_layernorm")] private readonly LayerNorm _postAttentionLayernorm;
    [ComponentName(Name = "attention")] private readonly GptNeoXAttention _attention;
    [ComponentName(Name = "mlp")] private readonly GptNeoXMlp _mlp;
    private readonly bool _parallel;

    public GptNeoXLayer(GptNeoXConfig config, int layerIndex, Device? device, ScalarType? dtype) : base(nameof(GptNeoXLayer))
    {
        _parallel = config.UseParallelResidual;
        _inputLayernorm = nn.LayerNorm(config.HiddenSize, config.LayerNormEps, device: device, dtype: dtype);
        _postAttentionLayernorm = nn.LayerNorm(config.HiddenSize, config.LayerNormEps, device: device, dtype: dtype);
        _attention = new GptNeoXAttention(config, layerIndex, device, dtype);
        _mlp = new GptNeoXMlp(config, device, dtype);
        RegisterComponents();
    }

    public Tensor Forward(Tensor hidden, Tensor mask, Tensor cos, Tensor sin, KvCache? cache)
    {
        using var scope = NewDisposeScope();
        var attn = _attention.Forward(_inputLayernorm.forward(hidden), mask, cos, sin, cache);
        Tensor output;
        if (_parallel)
        {
            output = _mlp.forward(_postAttentionLayernorm.forward(hidden)).Plus(attn).Plus(hidden);
        }
        else
        {
            var a = attn.Plus(hidden);
            output = _mlp.forward(_postAttentionLayernorm.forward(a)).Plus(a);
        }
        return output.MoveToOuterDisposeScope();
    }
}

/// <summary>transformers v4.45.1 <c>GPTNeoXModel</c>: <c>embed_in</c>, the layers, <c>final_layer_norm</c>.</summary>
internal sealed class GptNeoXModel : nn.Module
{
    [ComponentName(Name = "embed_in")] private readonly EmbeddingTable _embedIn;
    [ComponentName(Name = "layers")] private readonly ModuleList<nn.Module> _layers = new();
    [ComponentName(Name = "final_layer_norm")] private readonly LayerNorm _finalLayerNorm;
    private readonly GptNeoXConfig _config;

    public GptNeoXModel(GptNeoXConfig config, Device? device, ScalarType? dtype, Func<int, nn.Module, nn.Module>? wrapLayer) : base(nameof(GptNeoXModel))
    {
        _config = config;
        _embedIn = new EmbeddingTable(config.VocabSize, config.HiddenSize, device: device, dtype: dtype);
        DecoderLayers.Build(_layers, config.NumHiddenLayers, i => new GptNeoXLayer(config, i, device, dtype), wrapLayer);
        _finalLayerNorm = nn.LayerNorm(config.HiddenSize, config.LayerNormEps, device: device, dtype: dtype);
        RegisterComponents();
    }

    public Parameter EmbedInWeight => _embedIn.weight!;

    public int LayerCount => _layers.Count;

    public Tensor Embed(Tensor ids) => _embedIn.forward(ids);

    public Tensor Forward(Tensor inputsEmbeds, Tensor attentionMask, KvCache? cache, ILayerContext? context, bool positionsFromMask)
    {
        using var scope = NewDisposeScope();
        long past = cache?.SequenceLength ?? 0, fresh = inputsEmbeds.size(1);
        // Upstream masks future keys with finfo.min and then adds the (finfo.min) padding mask: future keys
        // become −∞, padded past keys stay finite.
        var mask = Attention.CausalPaddingMask(attentionMask, fresh, inputsEmbeds.dtype, future: double.NegativeInfinity);
        int headSize = _config.HiddenSize / _config.NumAttentionHeads;
        int ndims = (int)(headSize * _config.RotaryPct);
        var (cos, sin) = positionsFromMask
            ? Rotary.TablesAt(Rotary.MaskPositions(attentionMask, past, fresh), ndims, _config.RotaryEmbBase, inputsEmbeds.dtype)
            : Rotary.Tables(past, fresh, ndims, _config.RotaryEmbBase, inputsEmbeds.dtype, inputsEmbeds.device);
        var hidden = DecoderLayers.Run<GptNeoXLayer>(_layers, inputsEmbeds, context, (layer, h) => layer.Forward(h, mask, cos, sin, cache));
        return _finalLayerNorm.forward(hidden).MoveToOuterDisposeScope();
    }
}

/// <summary>transformers v4.45.1 <c>GPTNeoXForCausalLM</c> (modeling_gpt_neox.py; Black et al. 2022): the
/// model and <c>embed_out</c>, a separate (untied) output matrix in every published NeoX.</summary>
internal sealed class GptNeoXForCausalLM : nn.Module, IFlamingoHost
{
    [ComponentName(Name = "gpt_neox")] private readonly GptNeoXModel _gptNeoX;
    [ComponentName(Name = "embed_out")] private readonly Linear _embedOut;

    public GptNeoXForCausalLM(GptNeoXConfig config, Device? device = null, ScalarType? dtype = null, Func<int, nn.Module, nn.Module>? wrapLayer = null)
        : base(nameof(GptNeoXForCausalLM))
    {
        Config = config;
        _gptNeoX = new GptNeoXModel(config, device, dtype, wrapLayer);
        _embedOut = Uninitialized.Linear(config.HiddenSize, config.VocabSize, hasBias: false,
            device: config.TieWordEmbeddings ? META : device, dtype: dtype);
        if (config.TieWordEmbeddings) _embedOut.weight = _gptNeoX.EmbedInWeight;
        RegisterComponents();
    }

    public GptNeoXConfig Config { get; }

    public int HiddenSize => Config.HiddenSize;

    public int LayerCount => _gptNeoX.LayerCount;

    public Tensor EmbedTokens(Tensor inputIds) => _gptNeoX.Embed(inputIds);

    public Tensor Forward(Tensor inputsEmbeds, Tensor attentionMask, KvCache? cache, ILayerContext? context, bool positionsFromMask)
    {
        using var scope = NewDisposeScope();
        return _embedOut.Apply(_gptNeoX.Forward(inputsEmbeds, attentionMask, cache, context, positionsFromMask)).MoveToOuterDisposeScope();
    }
}
