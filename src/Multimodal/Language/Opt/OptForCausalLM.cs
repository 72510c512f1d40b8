using Multimodal.Common;
using Multimodal.Generation;

namespace Multimodal.Language.Opt;

/// <summary>transformers v4.45.1 <c>OPTDecoder</c> (modeling_opt.py): token embeddings (width
/// <c>word_embed_proj_dim</c>), optional <c>project_in</c>, learned positions, the layers, the final
/// LayerNorm and optional <c>project_out</c>.</summary>
internal sealed class OptDecoder : nn.Module
{
    [ComponentName(Name = "embed_tokens")] private readonly EmbeddingTable _embedTokens;
    [ComponentName(Name = "embed_positions")] private readonly OptLearnedPositionalEmbedding _embedPositions;
    [ComponentName(Name = "project_out")] private readonly Linear? _projectOut;
    [ComponentName(Name = "project_in")] private readonly Linear? _projectIn;
    [ComponentName(Name = "final_layer_norm")] private readonly LayerNorm? _finalLayerNorm;
    [ComponentName(Name = "layers")] private readonly ModuleList<OptDecoderLayer> _layers = new();

    public OptDecoder(OptConfig config, Device? device = null, ScalarType? dtype = null) : base(nameof(OptDecoder))
    {
        _embedTokens = new EmbeddingTable(config.VocabSize, config.EmbedDim, device: device, dtype: dtype);
        _embedPositions = new OptLearnedPositionalEmbedding(config.MaxPositionEmbeddings, config.HiddenSize, device, dtype);
        if (config.EmbedDim != config.HiddenSize)
        {
            _projectOut = Uninitialized.Linear(config.HiddenSize, config.EmbedDim, hasBias: false, device: device, dtype: dtype);
            _projectIn = Uninitialized.Linear(config.EmbedDim, config.HiddenSize, hasBias: false, device: device, dtype: dtype);
        }
        if (config.DoLayerNormBefore && !config.RemoveFinalLayerNorm)
            _finalLayerNorm = nn.LayerNorm(config.HiddenSize, 1e-5, config.LayerNormElementwiseAffine, device: device, dtype: dtype);
        for (int i = 0; i < config.NumHiddenLayers; i++) _layers.Add(new OptDecoderLayer(config, i, device, dtype));
        RegisterComponents();
    }

    public int LayerCount => _layers.Count;

    public Parameter EmbedTokensWeight => _embedTokens.weight!;

    public Tensor EmbedTokens(Tensor inputIds) => _embedTokens.forward(inputIds);

    /// <returns>(B, Tnew, E) hidden states before the head.</returns>
    public Tensor Forward(Tensor inputsEmbeds, Tensor attentionMask, KvCache? cache)
    {
        using var scope = NewDisposeScope();
        long past = cache?.SequenceLength ?? 0;
        long fresh = inputsEmbeds.size(1);
        if (attentionMask.size(1) != past + fresh)
            throw new ArgumentException(
                $"attention_mask has {attentionMask.size(1)} positions; expected {past} cached + {fresh} new.", nameof(attentionMask));
        var mask = Attention.CausalPaddingMask(attentionMask, fresh, inputsEmbeds.dtype);  // (B, 1, Tnew, Tpast + Tnew)
        var positions = _embedPositions.Forward(attentionMask, past);                        // (B, Tnew, D)
        var hidden = (_projectIn?.Apply(inputsEmbeds) ?? inputsEmbeds).Plus(positions);
        foreach (var layer in _layers) hidden = layer.Forward(hidden, mask, cache);
        if (_finalLayerNorm is not null) hidden = _finalLayerNorm.forward(hidden);
        if (_projectOut is not null) hidden = _projectOut.Apply(hidden);
        return hidden.MoveToOuterDisposeScope();
    }
}

/// <summary>transformers v4.45.1 <c>OPTModel</c>: a holder for the decoder, kept so keys read
/// <c>model.decoder.*</c>.</summary>
internal sealed class OptModel : nn.Module
{
    [ComponentName(Name = "decoder")] private readonly OptDecoder _decoder;

    public OptModel(OptConfig config, Device? device = null, ScalarType? dtype = null) : base(nameof(OptModel))
    {
        _decoder = new OptDecoder(config, device, dtype);
        RegisterComponents();
    }

    public OptDecoder Decoder => _decoder;
}

/// <summary>transformers v4.45.1 <c>OPTForCausalLM</c> (modeling_opt.py), Zhang et al. 2022: the decoder
/// and an <c>lm_head</c> that shares the token-embedding matrix when <c>tie_word_embeddings</c> (all
/// published OPTs). (B, T, E) embeddings → (B, T, V) logits.</summary>
internal sealed class OptForCausalLM : nn.Module, ICausalLanguageModel
{
    [ComponentName(Name = "model")] private readonly OptModel _model;
    [ComponentName(Name = "lm_head")] private readonly Linear _lmHead;

    public OptForCausalLM(OptConfig config, Device? device = null, ScalarType? dtype = null) : base(nameof(OptForCausalLM))
    {
        Config = config;
        _model = new OptModel(config, device, dtype);
        // Tied: one Parameter under two names, so state_dict() lists lm_head.weight like upstream and the
        // loader treats it as tied (absent from files, or a duplicate that is not copied). The head is
        // built on the meta device first so its own vocab × width matrix is never allocated.
        _lmHead = Uninitialized.Linear(config.EmbedDim, config.VocabSize, hasBias: false,
            device: config.TieWordEmbeddings ? META : device, dtype: dtype);
        if (config.TieWordEmbeddings) _lmHead.weight = _model.Decoder.EmbedTokensWeight;
        RegisterComponents();
    }

    public OptConfig Config { get; }

    public Tensor EmbedTokens(Tensor inputIds) => _model.Decoder.EmbedTokens(inputIds);

    public Tensor Forward(Tensor inputsEmbeds, Tensor attentionMask, KvCache? cache, Tensor? inputIds = null)
    {
        using var scope = NewDisposeScope();
        var hidden = _model.Decoder.Forward(inputsEmbeds, attentionMask, cache);
        return _lmHead.Apply(hidden).MoveToOuterDisposeScope();
    }

    public KvCache NewCache() => new(_model.Decoder.LayerCount);

    /// <inheritdoc/>
    public bool SelectRows(Tensor rows) => true;   // positions come from the mask, which the generator selects
}
