// Shapes: B batch, S encoder positions, T decoder positions, D d_model, H heads, d d_kv.
using Multimodal.Common;
using Multimodal.Generation;

namespace Multimodal.Language.T5;

/// <summary>transformers v4.45.1 <c>T5Attention</c> (modeling_t5.py): q/k/v/o without biases, scores q·kᵀ
/// WITHOUT 1/√d scaling, plus a position bias that only the first layer of a stack computes (learned
/// per relative-position bucket) and every layer reuses.</summary>
internal sealed class T5Attention : nn.Module
{
    [ComponentName(Name = "q")] private readonly Linear _q;
    [ComponentName(Name = "k")] private readonly Linear _k;
    [ComponentName(Name = "v")] private readonly Linear _v;
    [ComponentName(Name = "o")] private readonly Linear _o;
    [ComponentName(Name = "relative_attention_bias")] private readonly EmbeddingTable? _relativeAttentionBias;
    private readonly T5Config _config;
    private readonly int _layerIndex;

    public T5Attention(T5Config config, bool hasRelativeBias, int layerIndex, Device? device, ScalarType? dtype) : base(nameof(T5Attention))
    {
        _config = config;
        _layerIndex = layerIndex;
        int inner = config.NumHeads * config.DKv;
        _q = Uninitialized.Linear(config.DModel, inner, hasBias: false, device: device, dtype: dtype);
        _k = Uninitialized.Linear(config.DModel, inner, hasBias: false, device: device, dtype: dtype);
        _v = Uninitialized.Linear(config.DModel, inner, hasBias: false, device: device, dtype: dtype);
        _o = Uninitialized.Linear(inner, config.DModel, hasBias: false, device: device, dtype: dtype);
        if (hasRelativeBias) _relativeAttentionBias = new EmbeddingTable(config.RelativeAttentionNumBuckets, config.NumHeads, device: device, dtype: dtype);
        RegisterComponents();
    }

    /// <summary>(1, H, Tq, Tk) bias for queries at <paramref name="queryStart"/>… and keys 0…Tk−1.</summary>
    public Tensor PositionBias(long queryStart, long queryLength, long keyLength, bool bidirectional, Device device)
    {
        using var scope = NewDisposeScope();
        var context = Scalars.Arange(queryStart, queryStart + queryLength, ScalarType.Int64, device).unsqueeze(1);
        var memory = Scalars.Arange(0, keyLength, ScalarType.Int64, device).unsqueeze(0);
        var buckets = Bucket(memory - context, bidirectional, _config.RelativeAttentionNumBuckets, _config.RelativeAttentionMaxDistance);
        var values = _relativeAttentionBias!.forward(buckets);                          // (Tq, Tk, H)
        return values.permute(2, 0, 1).unsqueeze(0).MoveToOuterDisposeScope();
    }

    // T5Attention._relative_position_bucket: exact buckets for small distances, logarithmic up to max_distance.
    private static Tensor Bucket(Tensor relative, bool bidirectional, int numBuckets, int maxDistance)
    {
        var buckets = zeros_like(relative);
        if (bidirectional)
        {
            numBuckets /= 2;
            buckets = buckets.Plus(relative.GreaterThan(0).to(ScalarType.Int64).Times(numBuckets));
            relative = relative.abs();
        }
        else
        {
            relative = relative.AtMost(0).neg();
        }
        int maxExact = numBuckets / 2;
        var large = relative.to(ScalarType.Float32).Over(maxExact).log().Over(Math.Log(maxDistance / (double)maxExact)).Times((double)(numBuckets - maxExact));
        var largeBucket = large.to(ScalarType.Int64).Plus(maxExact).AtMost(numBuckets - 1);
        return buckets.Plus(where(relative.LessThan(maxExact), relative, largeBucket));
    }

    /// <summary>Self-attention of (B, Tnew, D) with additive <paramref name="bias"/> (B or 1, H, Tnew, Tk).</summary>
    public Tensor SelfAttention(Tensor x, Tensor bias, KvCache? cache)
    {
        using var scope = NewDisposeScope();
        var projected = LinearExtensions.ApplyEach(x, _q, _k, _v);
        var q = Attention.SplitHeads(projected[0], _config.NumHeads);
        var k = Attention.SplitHeads(projected[1], _config.NumHeads);
        var v = Attention.SplitHeads(projected[2], _config.NumHeads);
        if (cache is not null) (k, v) = cache.Update(_layerIndex, k, v);
        return Attend(q, k, v, bias).MoveToOuterDisposeScope();
    }

    /// <summary>Keys and values of the encoder output for cross-attention: constant for a request.</summary>
    public (Tensor Keys, Tensor Values) KeysValues(Tensor encoder)
    {
        using var scope = NewDisposeScope();
        var k = Attention.SplitHeads(_k.Apply(encoder), _config.NumHeads);
        var v = Attention.SplitHeads(_v.Apply(encoder), _config.NumHeads);
        return (k.MoveToOuterDisposeScope(), v.MoveToOuterDisposeScope());
    }

    public Tensor CrossAttention(Tensor x, Tensor keys, Tensor values, Tensor bias)
    {
        using var scope = NewDisposeScope();
        return Attend(Attention.SplitHeads(_q.Apply(x), _config.NumHeads), keys, values, bias).MoveToOuterDisposeScope();
    }

    // T5 does not scale scores; scaled dot-product attention divides by √d, so q is multiplied back first.
    private Tensor Attend(Tensor q, Tensor k, Tensor v, Tensor bias) =>
        _o.Apply(Attention.MergeHeads(Attention.ScaledDotProduct(q.Times(Math.Sqrt(_config.DKv)), k, v, bias.to(q.dtype))));
}

/// <summary>transformers v4.45.1 <c>T5DenseActDense</c> (wi → act → wo) and <c>T5DenseGatedActDense</c>
/// (act(wi_0) · wi_1 → wo), as <c>feed_forward_proj</c> selects.</summary>
internal sealed class T5DenseReluDense : nn.Module<Tensor, Tensor>
{
    [ComponentName(Name = "wi")] private readonly Linear? _wi;
    [ComponentName(Name = "wi_0")] private readonly Linear? _wi0;
    [ComponentName(Name = "wi_1")] private readonly Linear? _wi1;
    [ComponentName(Name = "wo")] private readonly Linear _wo;
    private readonly Func<Tensor, Tensor> _activation;

    public T5DenseReluDense(T5Config config, Device? device, ScalarType? dtype) : base(nameof(T5DenseReluDense))
    {
        _activation = Activations.Get(config.Activation, "feed_forward_proj");
        if (config.Gated)
        {
            _wi0 = Uninitialized.Linear(config.DModel, config.DFf, hasBias: false, device: device, dtype: dtype);
            _wi1 = Uninitialized.Linear(config.DModel, config.DFf, hasBias: false, device: device, dtype: dtype);
        }
        else
        {
            _wi = Uninitialized.Linear(config.DModel, config.DFf, hasBias: false, device: device, dtype: dtype);
        }
        _wo = Uninitialized.Linear(config.DFf, config.DModel, hasBias: false, device: device, dtype: dtype);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        if (_wi is not null) return _wo.Apply(_activation(_wi.Apply(x))).MoveToOuterDisposeScope();
        var gated = LinearExtensions.ApplyEach(x, _wi0!, _wi1!);
        return _wo.Apply(_activation(gated[0]) * gated[1]).MoveToOuterDisposeScope();
    }
}

/// <summary>The sub-layers of a <c>T5Block</c> (<c>T5LayerSelfAttention</c>, <c>T5LayerCrossAttention</c>,
/// <c>T5LayerFF</c>): a pre-RMSNorm residual around attention or the FFN. Keys: <c>SelfAttention</c>,
/// <c>EncDecAttention</c>, <c>DenseReluDense</c>, <c>layer_norm</c>.</summary>
internal sealed class T5SubLayer : nn.Module
{
    [ComponentName(Name = "SelfAttention")] private readonly T5Attention? _selfAttention;
    [ComponentName(Name = "EncDecAttention")] private readonly T5Attention? _encDecAttention;
    [ComponentName(Name = "DenseReluDense")] private readonly T5DenseReluDense? _denseReluDense;
    [ComponentName(Name = "layer_norm")] private readonly LlamaRmsNorm _layerNorm;

    private T5SubLayer(T5Config config, T5Attention? self, T5Attention? cross, T5DenseReluDense? ff, Device? device, ScalarType? dtype) : base(nameof(T5SubLayer))
    {
        _selfAttention = self;
        _encDecAttention = cross;
        _denseReluDense = ff;
        _layerNorm = new LlamaRmsNorm(config.DModel, config.LayerNormEpsilon, device, dtype);
        RegisterComponents();
    }

    public static T5SubLayer SelfAttentionLayer(T5Config c, bool bias, int layer, Device? device, ScalarType? dtype) =>
        new(c, new T5Attention(c, bias, layer, device, dtype), null, null, device, dtype);

    public static T5SubLayer CrossAttentionLayer(T5Config c, Device? device, ScalarType? dtype) =>
        new(c, null, new T5Attention(c, false, -1, device, dtype), null, device, dtype);

    public static T5SubLayer FeedForwardLayer(T5Config c, Device? device, ScalarType? dtype) =>
        new(c, null, null, new T5DenseReluDense(c, device, dtype), device, dtype);

    public T5Attention Attention => _selfAttention ?? _encDecAttention!;

    public Tensor Self(Tensor h, Tensor bias, KvCache? cache)
    {
        using var scope = NewDisposeScope();
        return h.Plus(_selfAttention!.SelfAttention(_layerNorm.forward(h), bias, cache)).MoveToOuterDisposeScope();
    }

    public Tensor Cross(Tensor h, Tensor keys, Tensor values, Tensor bias)
    {
        using var scope = NewDisposeScope();
        return h.Plus(_encDecAttention!.CrossAttention(_layerNorm.forward(h), keys, values, bias)).MoveToOuterDisposeScope();
    }

    public Tensor FeedForward(Tensor h)
    {
        using var scope = NewDisposeScope();
        return h.Plus(_denseReluDense!.forward(_layerNorm.forward(h))).MoveToOuterDisposeScope();
    }
}

/// <summary>transformers v4.45.1 <c>T5Block</c>: <c>layer.0</c> self-attention, (decoder) <c>layer.1</c>
/// cross-attention, then the FFN.</summary>
internal sealed class T5Block : nn.Module
{
    [ComponentName(Name = "layer")] private readonly ModuleList<T5SubLayer> _layer = new();

    public T5Block(T5Config config, bool decoder, int index, Device? device, ScalarType? dtype) : base(nameof(T5Block))
    {
        _layer.Add(T5SubLayer.SelfAttentionLayer(config, index == 0, index, device, dtype));
        if (decoder) _layer.Add(T5SubLayer.CrossAttentionLayer(config, device, dtype));
        _layer.Add(T5SubLayer.FeedForwardLayer(config, device, dtype));
        RegisterComponents();
    }

    public T5SubLayer this[int i] => _layer[i];

    public int Count => _layer.Count;
}

/// <summary>transformers v4.45.1 <c>T5Stack</c>: the shared embedding (not owned), blocks and a final RMSNorm.</summary>
internal sealed class T5Stack : nn.Module
{
    [ComponentName(Name = "embed_tokens")] private readonly EmbeddingTable _embedTokens;
    [ComponentName(Name = "block")] private readonly ModuleList<T5Block> _block = new();
    [ComponentName(Name = "final_layer_norm")] private readonly LlamaRmsNorm _finalLayerNorm;
    private readonly bool _decoder;

    public T5Stack(T5Config config, EmbeddingTable shared, bool decoder, Device? device, ScalarType? dtype) : base(nameof(T5Stack))
    {
        _decoder = decoder;
        _embedTokens = shared;
        int layers = decoder ? config.DecoderLayers : config.NumLayers;
        for (int i = 0; i < layers; i++) _block.Add(new T5Block(config, decoder, i, device, dtype));
        _finalLayerNorm = new LlamaRmsNorm(config.DModel, config.LayerNormEpsilon, device, dtype);
        RegisterComponents();
    }

    public int LayerCount => _block.Count;

    /// <summary>Encoder: (B, S, D) embeddings and (B, S) mask → (B, S, D).</summary>
    public Tensor Encode(Tensor embeds, Tensor mask)
    {
        using var scope = NewDisposeScope();
        var bias = _block[0][0].Attention.PositionBias(0, embeds.size(1), embeds.size(1), bidirectional: true, embeds.device)
                   .Plus(Attention.PaddingMask(mask, embeds.dtype));                         // (B, H, S, S)
        var h = embeds;
        foreach (var block in _block) h = block[1].FeedForward(block[0].Self(h, bias, null));
        return _finalLayerNorm.forward(h).MoveToOuterDisposeScope();
    }

    /// <summary>Decoder: new positions' embeddings with causal self-attention (cached) and cross-attention
    /// to precomputed encoder keys/values.</summary>
    public Tensor Decode(Tensor embeds, Tensor mask, IReadOnlyList<(Tensor Keys, Tensor Values)> encoder, Tensor encoderMask, KvCache? cache)
    {
        using var scope = NewDisposeScope();
        long past = cache?.SequenceLength ?? 0, fresh = embeds.size(1);
        var selfBias = _block[0][0].Attention.PositionBias(past, fresh, past + fresh, bidirectional: false, embeds.device)
                       .Plus(Attention.CausalPaddingMask(mask, fresh, embeds.dtype));
        var crossBias = Attention.PaddingMask(encoderMask, embeds.dtype);
        var h = embeds;
        for (int i = 0; i < _block.Count; i++)
        {
            h = _block[i][0].Self(h, selfBias, cache);
            h = _block[i][1].Cross(h, encoder[i].Keys, encoder[i].Values, crossBias);
            h = _block[i][2].FeedForward(h);
        }
        return _finalLayerNorm.forward(h).MoveToOuterDisposeScope();
    }

    public IReadOnlyList<(Tensor Keys, Tensor Values)> CrossKeysValues(Tensor encoderHidden) =>
        _block.Select(b => b[1].Attention.KeysValues(encoderHidden)).ToList();
}

/// <summary>transformers v4.45.1 <c>T5ForConditionalGeneration</c> (modeling_t5.py; Raffel et al. 2020,
/// Flan-T5: Chung et al. 2022): shared embedding, encoder, decoder and head; a tied head rescales the
/// decoder output by d_model^−0.5 first (Flan-T5's untied head does not).</summary>
internal sealed class T5ForConditionalGeneration : nn.Module, IEncoderDecoderLanguageModel
{
    [ComponentName(Name = "shared")] private readonly EmbeddingTable _shared;
    [ComponentName(Name = "encoder")] private readonly T5Stack _encoder;
    [ComponentName(Name = "decoder")] private readonly T5Stack _decoder;
    [ComponentName(Name = "lm_head")] private readonly Linear _lmHead;

    public T5ForConditionalGeneration(T5Config config, Device? device = null, ScalarType? dtype = null) : base(nameof(T5ForConditionalGeneration))
    {
        Config = config;
        _shared = new EmbeddingTable(config.VocabSize, config.DModel, device: device, dtype: dtype);
        _encoder = new T5Stack(config, _shared, decoder: false, device, dtype);
        _decoder = new T5Stack(config, _shared, decoder: true, device, dtype);
        _lmHead = Uninitialized.Linear(config.DModel, config.VocabSize, hasBias: false, device: config.TieWordEmbeddings ? META : device, dtype: dtype);
        if (config.TieWordEmbeddings) _lmHead.weight = _shared.weight!;
        RegisterComponents();
    }

    public T5Config Config { get; }

    public int DecoderLayers => _decoder.LayerCount;

    public Tensor Embed(Tensor ids) => _shared.forward(ids);

    public long DecoderStartTokenId => Config.DecoderStartTokenId ?? Config.PadTokenId;

    public ICausalLanguageModel DecoderSession(Tensor encoderHidden, Tensor encoderMask) => new T5DecoderSession(this, encoderHidden, encoderMask);

    public Tensor Encode(Tensor embeds, Tensor mask) => _encoder.Encode(embeds, mask);

    public IReadOnlyList<(Tensor Keys, Tensor Values)> CrossKeysValues(Tensor encoderHidden) => _decoder.CrossKeysValues(encoderHidden);

    /// <summary>(B, Tnew, V) logits for new decoder positions.</summary>
    public Tensor Decode(Tensor embeds, Tensor mask, IReadOnlyList<(Tensor Keys, Tensor Values)> encoder, Tensor encoderMask, KvCache? cache)
    {
        using var scope = NewDisposeScope();
        var h = _decoder.Decode(embeds, mask, encoder, encoderMask, cache);
        if (Config.TieWordEmbeddings) h = h.Times(Math.Pow(Config.DModel, -0.5));
        return _lmHead.Apply(h).MoveToOuterDisposeScope();
    }
}

/// <summary>One request's T5 decoder as a causal language model for the generator: the encoder ran once,
/// its cross-attention keys/values are computed once and reused at every step (beams share their row's).</summary>
internal sealed class T5DecoderSession(T5ForConditionalGeneration model, Tensor encoderHidden, Tensor encoderMask) : ICausalLanguageModel, IDisposable
{
    private IReadOnlyList<(Tensor Keys, Tensor Values)>? _kv;
    private Tensor _mask = encoderMask;
    private Tensor _hidden = encoderHidden;
    private bool _owns;

    public Tensor EmbedTokens(Tensor inputIds) => model.Embed(inputIds);

    public KvCache NewCache() => new(model.DecoderLayers);

    /// <inheritdoc/>
    public bool SelectRows(Tensor rows)
    {
        var hidden = _hidden.index_select(0, rows).DetachFromDisposeScope();
        var mask = _mask.index_select(0, rows).DetachFromDisposeScope();
        var kv = _kv?.Select(kv => (kv.Keys.index_select(0, rows).DetachFromDisposeScope(), kv.Values.index_select(0, rows).DetachFromDisposeScope())).ToList();
        DisposeKv();
        if (_owns) { _hidden.Dispose(); _mask.Dispose(); }
        (_hidden, _mask, _kv, _owns) = (hidden, mask, kv, true);
        return true;
    }

    public Tensor Forward(Tensor inputsEmbeds, Tensor attentionMask, KvCache? cache, Tensor? inputIds = null)
    {
        long rows = inputsEmbeds.size(0);
        if (_kv is null || _hidden.size(0) != rows)
        {
            if (_hidden.size(0) != rows)
            {
                long factor = rows / _hidden.size(0);
                _hidden = _hidden.repeat_interleave(factor, 0).DetachFromDisposeScope();
                _mask = _mask.repeat_interleave(factor, 0).DetachFromDisposeScope();
                _owns = true;
            }
            DisposeKv();
            _kv = model.CrossKeysValues(_hidden).Select(kv => (kv.Keys.DetachFromDisposeScope(), kv.Values.DetachFromDisposeScope())).ToList();
        }
        return model.Decode(inputsEmbeds, attentionMask, _kv, _mask, cache);
    }

    private void DisposeKv()
    {
        foreach (var (k, v) in _kv ?? []) { k.Dispose(); v.Dispose(); }
        _kv = null;
    }

    public void Dispose()
    {
        DisposeKv();
        if (_owns) { _hidden.Dispose(); _mask.Dispose(); }
    }
}
