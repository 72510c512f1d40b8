using Multimodal.Common;
using Multimodal.Generation;

namespace Multimodal.Language.Mpt;

/// <summary>transformers v4.45.1 <c>MptAttention</c> (modeling_mpt.py): fused <c>Wqkv</c> laid out as
/// [Q; K; V] blocks, scores q·k/√d plus the ALiBi bias, masked positions set to <c>finfo.min</c>.</summary>
internal sealed class MptAttention : nn.Module
{
    [ComponentName(Name = "Wqkv")] private readonly Linear _wqkv;
    [ComponentName(Name = "out_proj")] private readonly Linear _outProj;
    private readonly int _heads;
    private readonly int _layerIndex;

    public MptAttention(MptConfig config, int layerIndex, Device? device, ScalarType? dtype) : base(nameof(MptAttention))
    {
        _heads = config.NHeads;
        _layerIndex = layerIndex;
        _wqkv = Uninitialized.Linear(config.DModel, 3 * config.DModel, hasBias: !config.NoBias, device: device, dtype: dtype);
        _outProj = Uninitialized.Linear(config.DModel, config.DModel, hasBias: !config.NoBias, device: device, dtype: dtype);
        RegisterComponents();
    }

    /// <param name="hidden">(B, Tnew, D).</param>
    /// <param name="mask">additive (B, H, Tnew, Tpast + Tnew): ALiBi plus finfo.min at masked keys.</param>
    /// <param name="cache">extended when given.</param>
    public Tensor Forward(Tensor hidden, Tensor mask, KvCache? cache)
    {
        using var scope = NewDisposeScope();
        var qkv = _wqkv.Apply(hidden).chunk(3, 2);
        var q = Attention.SplitHeads(qkv[0], _heads);       // (B, H, Tnew, d)
        var k = Attention.SplitHeads(qkv[1], _heads);
        var v = Attention.SplitHeads(qkv[2], _heads);
        if (cache is not null) (k, v) = cache.Update(_layerIndex, k, v);
        var context = Attention.ScaledDotProduct(q, k, v, mask);
        return _outProj.Apply(Attention.MergeHeads(context)).MoveToOuterDisposeScope();
    }
}

/// <summary>transformers v4.45.1 <c>MptMLP</c>: up_proj → exact GELU → down_proj.</summary>
internal sealed class MptMlp : nn.Module<Tensor, Tensor>
{
    [ComponentName(Name = "up_proj")] private readonly Linear _upProj;
    [ComponentName(Name = "down_proj")] private readonly Linear _downProj;

    public MptMlp(MptConfig config, Device? device, ScalarType? dtype) : base(nameof(MptMlp))
    {
        int inner = config.FfnWidth;
        _upProj = Uninitialized.Linear(config.DModel, inner, hasBias: !config.NoBias, device: device, dtype: dtype);
        _downProj = Uninitialized.Linear(inner, config.DModel, hasBias: !config.NoBias, device: device, dtype: dtype);
        RegisterComponents();
    }

    public override Tensor forward(Tensor hidden)
    {
        using var scope = NewDisposeScope();
        return _downProj.Apply(nn.functional.gelu(_upProj.Apply(hidden))).MoveToOuterDisposeScope();
    }
}

/// <summary>transformers v4.45.1 <c>MptBlock</c>: pre-LN (LayerNorms without bias) attention and MLP, each residual.</summary>
internal sealed class MptBlock : nn.Module
{
    [ComponentName(Name = "norm_1")] private readonly LayerNorm _norm1;
    [ComponentName(Name = "attn")] private readonly MptAttention _attn;
    [ComponentName(Name = "norm_2")] private readonly LayerNorm _norm2;
    [ComponentName(Name = "ffn")] private readonly MptMlp _ffn;

    public MptBlock(MptConfig config, int layerIndex, Device? device, ScalarType? dtype) : base(nameof(MptBlock))
    {
        _norm1 = nn.LayerNorm(config.DModel, config.LayerNormEpsilon, bias: !config.NoBias, device: device, dtype: dtype);
        _attn = new MptAttention(config, layerIndex, device, dtype);
        _norm2 = nn.LayerNorm(config.DModel, config.LayerNormEpsilon, bias: !config.NoBias, device: device, dtype: dtype);
        _ffn = new MptMlp(config, device, dtype);
        RegisterComponents();
    }

    public Tensor Forward(Tensor hidden, Tensor mask, KvCache? cache)
    {
        using var scope = NewDisposeScope();
        hidden = hidden.Plus(_attn.Forward(_norm1.forward(hidden), mask, cache));
        hidden = hidden.Plus(_ffn.forward(_norm2.forward(hidden)));
        return hidden.MoveToOuterDisposeScope();
    }
}

/// <summary>transformers v4.45.1 <c>MptModel</c>: token embeddings (<c>wte</c>), the blocks, a final
/// LayerNorm without bias. Attention positions come from ALiBi only (no position embeddings).</summary>
internal sealed class MptModel : nn.Module
{
    [ComponentName(Name = "wte")] private readonly EmbeddingTable _wte;
    [ComponentName(Name = "blocks")] private readonly ModuleList<nn.Module> _blocks = new();
    [ComponentName(Name = "norm_f")] private readonly LayerNorm _normF;
    private readonly MptConfig _config;

    public MptModel(MptConfig config, Device? device, ScalarType? dtype, Func<int, nn.Module, nn.Module>? wrapLayer)
        : base(nameof(MptModel))
    {
        _config = config;
        _wte = new EmbeddingTable(config.VocabSize, config.DModel, device: device, dtype: dtype);
        DecoderLayers.Build(_blocks, config.NLayers, i => new MptBlock(config, i, device, dtype), wrapLayer);
        _normF = nn.LayerNorm(config.DModel, config.LayerNormEpsilon, bias: !config.NoBias, device: device, dtype: dtype);
        RegisterComponents();
    }

    public Parameter WteWeight => _wte.weight!;

    public int LayerCount => _blocks.Count;

    public Tensor Embed(Tensor ids) => _wte.forward(ids);

    public Tensor Forward(Tensor inputsEmbeds, Tensor attentionMask, KvCache? cache, ILayerContext? context)
    {
        using var scope = NewDisposeScope();
        long fresh = inputsEmbeds.size(1);
        var padding = Attention.CausalPaddingMask(attentionMask, fresh, inputsEmbeds.dtype);   // (B, 1, Tnew, Tk)
        var mask = padding.Plus(Alibi(attentionMask.size(1), inputsEmbeds.dtype, inputsEmbeds.device)); // (B, H, Tnew, Tk)
        var hidden = DecoderLayers.Run<MptBlock>(_blocks, inputsEmbeds, context, (block, h) => block.Forward(h, mask, cache));
        return _normF.forward(hidden).MoveToOuterDisposeScope();
    }

    // build_mpt_alibi_tensor: slopes 2^(-k·max/H') for k = 1..H' (H' the next power of two, odd-then-even
    // interleave when H is not one); the bias of key j is slope · (j − (Tk − 1)), whatever the query.
    private Tensor Alibi(long keys, ScalarType dtype, Device device)
    {
        int heads = _config.NHeads;
        int pow2 = 1 << (int)Math.Ceiling(Math.Log2(heads));
        var slopes = Enumerable.Range(1, pow2).Select(k => 1.0 / Math.Pow(2, k * (_config.AlibiBiasMax / pow2))).ToArray();
        if (pow2 != heads)
            slopes = slopes.Where((_, i) => i % 2 == 1).Concat(slopes.Where((_, i) => i % 2 == 0)).Take(heads).ToArray();
        var distance = Scalars.Arange(1 - keys, 1, ScalarType.Int32, device).to(ScalarType.Float32);         // (Tk)
        var bias = tensor(slopes.Select(s => (float)s).ToArray(), device: device).view(heads, 1, 1) * distance.view(1, 1, keys);
        return bias.unsqueeze(0).to(dtype);                                                          // (1, H, 1, Tk)
    }
}

/// <summary>transformers v4.45.1 <c>MptForCausalLM</c> (modeling_mpt.py), MosaicML's MPT: the model and a
/// head tied to <c>wte</c>. (B, T, D) embeddings → (B, T, V) logits.</summary>
internal sealed class MptForCausalLM : nn.Module, IFlamingoHost
{
    [ComponentName(Name = "transformer")] private readonly MptModel _transformer;
    [ComponentName(Name = "lm_head")] private readonly Linear _lmHead;

    public MptForCausalLM(MptConfig config, Device? device = null, ScalarType? dtype = null, Func<int, nn.Module, nn.Module>? wrapLayer = null)
        : base(nameof(MptForCausalLM))
    {
        Config = config;
        _transformer = new MptModel(config, device, dtype, wrapLayer);
        _lmHead = Uninitialized.Linear(config.DModel, config.VocabSize, hasBias: false,
            device: config.TieWordEmbeddings ? META : device, dtype: dtype);
        if (config.TieWordEmbeddings) _lmHead.weight = _transformer.WteWeight;
        RegisterComponents();
    }

    public MptConfig Config { get; }

    public int HiddenSize => Config.DModel;

    public int LayerCount => _transformer.LayerCount;

    public Tensor EmbedTokens(Tensor inputIds) => _transformer.Embed(inputIds);

    // ALiBi reads key distances, not positions.
    public Tensor Forward(Tensor inputsEmbeds, Tensor attentionMask, KvCache? cache, ILayerContext? context, bool positionsFromMask)
    {
        using var scope = NewDisposeScope();
        var hidden = _transformer.Forward(inputsEmbeds, attentionMask, cache, context);
        return _lmHead.Apply(hidden).MoveToOuterDisposeScope();
    }
}
