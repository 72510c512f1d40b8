// Shapes: B batch, T positions (Tpast cached + Tnew new), D width, V vocabulary.
using System.Text.Json;
using System.Text.Json.Serialization;
using Multimodal.Common;
using Multimodal.Generation;

namespace Multimodal.Language.Llama;

/// <summary>transformers v4.45 <c>LlamaConfig</c> (configuration_llama.py); initializers are upstream's defaults.</summary>
public sealed record LlamaConfig : TextConfig
{
    /// <inheritdoc/>
    public override string ModelType { get; init; } = "llama";
    /// <inheritdoc/>
    [JsonIgnore] public override bool IsDecoderOnly => true;
    /// <summary>Vocabulary size.</summary>
    public int VocabSize { get; init; } = 32000;
    /// <summary>Width.</summary>
    public int HiddenSize { get; init; } = 4096;
    /// <summary>MLP width.</summary>
    public int IntermediateSize { get; init; } = 11008;
    /// <summary>Layers.</summary>
    public int NumHiddenLayers { get; init; } = 32;
    /// <summary>Query heads.</summary>
    public int NumAttentionHeads { get; init; } = 32;
    /// <summary>Key/value heads (grouped-query attention when fewer); null means <see cref="NumAttentionHeads"/>.</summary>
    public int? NumKeyValueHeads { get; init; }
    /// <summary>Head width; null means width / heads.</summary>
    public int? HeadDim { get; init; }
    /// <summary>MLP activation.</summary>
    public string HiddenAct { get; init; } = "silu";
    /// <summary>Positions the model was trained for (RoPE has no table; informational).</summary>
    public int MaxPositionEmbeddings { get; init; } = 2048;

    /// <inheritdoc/>
    [System.Text.Json.Serialization.JsonIgnore] public override int? ContextLength => MaxPositionEmbeddings;
    /// <summary>RMSNorm epsilon.</summary>
    public double RmsNormEps { get; init; } = 1e-6;
    /// <summary>RoPE base.</summary>
    public double RopeTheta { get; init; } = 10000.0;
    /// <summary>RoPE scaling; only null is supported.</summary>
    public JsonElement? RopeScaling { get; init; }
    /// <summary>Biases on q/k/v/o; only false is supported.</summary>
    public bool AttentionBias { get; init; }
    /// <summary>Biases on the MLP; only false is supported.</summary>
    public bool MlpBias { get; init; }
    /// <summary>Tensor-parallel slicing used in pretraining; only 1 changes nothing.</summary>
    public int PretrainingTp { get; init; } = 1;
    /// <summary>Training only.</summary>
    public double AttentionDropout { get; init; }
    /// <summary>Training only.</summary>
    public double InitializerRange { get; init; } = 0.02;
    /// <summary>Head shares the token embeddings.</summary>
    public bool TieWordEmbeddings { get; init; }
    /// <summary>Begin-of-sequence id.</summary>
    public int BosTokenId { get; init; } = 1;
    /// <summary>End-of-sequence id.</summary>
    public int EosTokenId { get; init; } = 2;
    /// <summary>Padding id.</summary>
    public int? PadTokenId { get; init; }

    /// <summary>Checks the sizes (named by their config keys) and refuses what is not implemented.</summary>
    internal void Validate(ConfigChecks checks)
    {
        checks.Heads("text_config.hidden_size", HiddenSize, "text_config.num_attention_heads", NumAttentionHeads)
            .Size("text_config.intermediate_size", IntermediateSize)
            .Layers("text_config.num_hidden_layers", NumHiddenLayers)
            .Vocabulary("text_config.vocab_size", VocabSize)
            .Require((NumKeyValueHeads ?? NumAttentionHeads) == NumAttentionHeads,
                $"text_config.num_key_value_heads = {NumKeyValueHeads} (grouped-query attention) is not supported yet; expected {NumAttentionHeads}")
            .Require((HeadDim ?? HiddenSize / NumAttentionHeads) == HiddenSize / NumAttentionHeads,
                $"text_config.head_dim = {HeadDim} is not hidden_size / num_attention_heads ({HiddenSize / Math.Max(1, NumAttentionHeads)})")
            .Require(RopeScaling is null || RopeScaling.Value.ValueKind == JsonValueKind.Null, "text_config.rope_scaling is not supported")
            .Require(!AttentionBias && !MlpBias, "text_config.attention_bias / mlp_bias = true are not supported")
            .Require(PretrainingTp == 1, "text_config.pretraining_tp other than 1 is not supported");
    }
}

/// <summary>transformers v4.45 <c>LlamaModel</c>: token embeddings, decoder layers, final RMSNorm.</summary>
internal sealed class LlamaModel : nn.Module
{
    [ComponentName(Name = "embed_tokens")] private readonly EmbeddingTable _embedTokens;
    [ComponentName(Name = "layers")] private readonly ModuleList<LlamaDecoderLayer> _layers = new();
    [ComponentName(Name = "norm")] private readonly LlamaRmsNorm _norm;
    private readonly LlamaConfig _config;

    public LlamaModel(LlamaConfig config, Device? device, ScalarType? dtype) : base(nameof(LlamaModel))
    {
        _config = config;
        _embedTokens = new EmbeddingTable(config.VocabSize, config.HiddenSize, device: device, dtype: dtype);
        for (int i = 0; i < config.NumHiddenLayers; i++)
            _layers.Add(new LlamaDecoderLayer(config.HiddenSize, config.NumAttentionHeads, config.IntermediateSize, config.HiddenAct, config.RmsNormEps, i, device, dtype));
        _norm = new LlamaRmsNorm(config.HiddenSize, config.RmsNormEps, device, dtype);
        RegisterComponents();
    }

    public int LayerCount => _layers.Count;

    public Parameter EmbedTokensWeight => _embedTokens.weight!;

    public Tensor Embed(Tensor ids) => _embedTokens.forward(ids);

    /// <param name="embeds">(B, Tnew, D).</param>
    /// <param name="attentionMask">(B, Tpast + Tnew).</param>
    /// <param name="positions">(B, Tnew) RoPE positions.</param>
    /// <param name="cache">self-attention cache.</param>
    public Tensor Forward(Tensor embeds, Tensor attentionMask, Tensor positions, KvCache? cache)
    {
        using var scope = NewDisposeScope();
        var mask = Attention.CausalPaddingMask(attentionMask, embeds.shape[1], embeds.dtype);
        var (cos, sin) = Rotary.TablesAt(positions, _config.HiddenSize / _config.NumAttentionHeads, _config.RopeTheta, embeds.dtype);
        var hidden = embeds;
        foreach (var layer in _layers) hidden = layer.Forward(hidden, mask, cos, sin, cache);
        return _norm.forward(hidden).MoveToOuterDisposeScope();
    }
}

/// <summary>transformers v4.45 <c>LlamaForCausalLM</c> (modeling_llama.py; Touvron et al. 2023): the decoder and
/// an <c>lm_head</c>. Positions: driven through <see cref="ICausalLanguageModel"/> (generation) they are
/// <c>cumsum(attention_mask) − 1</c> with padding at 1, as <c>prepare_inputs_for_generation</c> computes them; a plain
/// upstream <c>forward()</c> without <c>position_ids</c> uses 0 … L−1 in every row instead (<see cref="ForwardSequential"/>).</summary>
internal sealed class LlamaForCausalLM : nn.Module, ICausalLanguageModel
{
    [ComponentName(Name = "model")] private readonly LlamaModel _model;
    [ComponentName(Name = "lm_head")] private readonly Linear _lmHead;

    public LlamaForCausalLM(LlamaConfig config, Device? device = null, ScalarType? dtype = null) : base(nameof(LlamaForCausalLM))
    {
        Config = config;
        _model = new LlamaModel(config, device, dtype);
        _lmHead = Uninitialized.Linear(config.HiddenSize, config.VocabSize, hasBias: false,
            device: config.TieWordEmbeddings ? META : device, dtype: dtype);
        if (config.TieWordEmbeddings) _lmHead.weight = _model.EmbedTokensWeight;
        RegisterComponents();
    }

    public LlamaConfig Config { get; }

    public Tensor EmbedTokens(Tensor inputIds) => _model.Embed(inputIds);

    public Tensor Forward(Tensor inputsEmbeds, Tensor attentionMask, KvCache? cache, Tensor? inputIds = null)
    {
        using var scope = NewDisposeScope();
        long past = cache?.SequenceLength ?? 0, fresh = inputsEmbeds.shape[1];
        var m = attentionMask.to(ScalarType.Int64);
        var positions = m.cumsum(1).Minus(1).FillWhere(m.EqualTo(0), 1L).narrow(1, past, fresh);
        return _lmHead.Apply(_model.Forward(inputsEmbeds, attentionMask, positions, cache)).MoveToOuterDisposeScope();
    }

    /// <summary>Upstream <c>forward()</c> without <c>position_ids</c>: positions 0 … L−1 in every row, padding counted.</summary>
    public Tensor ForwardSequential(Tensor inputsEmbeds, Tensor attentionMask)
    {
        using var scope = NewDisposeScope();
        long b = inputsEmbeds.shape[0], t = inputsEmbeds.shape[1];
        var positions = Scalars.Arange(0, t, ScalarType.Int64, inputsEmbeds.device).unsqueeze(0).expand(b, t);
        return _lmHead.Apply(_model.Forward(inputsEmbeds, attentionMask, positions, null)).MoveToOuterDisposeScope();
    }

    public KvCache NewCache() => new(_model.LayerCount);

    /// <inheritdoc/>
    public bool SelectRows(Tensor rows) => true;   // positions come from the mask, which the generator selects
}
