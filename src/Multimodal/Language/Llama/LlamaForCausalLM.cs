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
    /// <summary><c>vocab_size</c> (default 32000): Vocabulary size.</summary>
    public int VocabSize { get; init; } = 32000;
    /// <summary><c>hidden_size</c> (default 4096): Width.</summary>
    public int HiddenSize { get; init; } = 4096;
    /// <summary><c>intermediate_size</c> (default 11008): MLP width.</summary>
    public int IntermediateSize { get; init; } = 11008;
    /// <summary><c>num_hidden_layers</c> (default 32): Layers.</summary>
    public int NumHiddenLayers { get; init; } = 32;
    /// <summary><c>num_attention_heads</c> (default 32): Query heads.</summary>
    public int NumAttentionHeads { get; init; } = 32;
    /// <summary>Key/value heads (grouped-query attention when fewer); null means <see cref="NumAttentionHeads"/>.</summary>
    public int? NumKeyValueHeads { get; init; }
    /// <summary><c>head_dim</c> (default null): Head width; null means width / heads.</summary>
    public int? HeadDim { get; init; }
    /// <summary><c>hidden_act</c> (default "silu"): MLP activation.</summary>
    public string HiddenAct { get; init; } = "silu";
    /// <summary>Positions the model was trained for (RoPE has no table; informational).</summary>
    public int MaxPositionEmbeddings { get; init; } = 2048;

    /// <inheritdoc/>
    [System.Text.Json.Serialization.JsonIgnore] public override int? ContextLength => MaxPositionEmbeddings;
    /// <summary><c>rms_norm_eps</c> (default 1e-6): RMSNorm epsilon.</summary>
    public double RmsNormEps { get; init; } = 1e-6;
    /// <summary><c>rope_theta</c> (default 10000.0): RoPE base.</summary>
    public double RopeTheta { get; init; } = 10000.0;
    /// <summary><c>rope_scaling</c> (default null): RoPE scaling; only null is supported.</summary>
    public JsonElement? RopeScaling { get; init; }
    /// <summary>Biases on q/k/v/o; only false is supported.</summary>
    public bool AttentionBias { get; init; }
    /// <summary>Biases on the MLP; only false is supported.</summary>
    public bool MlpBias { get; init; }
    /// <summary>Tensor-parallel slicing used in pretraining; only 1 changes nothing.</summary>
    public int PretrainingTp { get; init; } = 1;
    /// <summary><c>attention_dropout</c> (default 0): used in training only; inference reads it and ignores it.</summary>
    public double AttentionDropout { get; init; }
    /// <summary><c>initializer_range</c> (default 0.02): used in training only; inference reads it and ignores it.</summary>
    public double InitializerRange { get; init; } = 0.02;
    /// <summary><c>tie_word_embeddings</c> (default false): Head shares the token embeddings.</summary>
    public bool TieWordEmbeddings { get; init; }
    /// <summary><c>bos_token_id</c> (default 1): Begin-of-sequence id.</summary>
    public int BosTokenId { get; init; } = 1;
    /// <summary><c>eos_token_id</c> (default 2): End-of-sequence id.</summary>
    public int EosTokenId { get; init; } = 2;
    /// <summary><c>pad_token_id</c> (default null): Padding id.</summary>
    public int? PadTokenId { get; init; }

    /// <summary>Checks the sizes (named by their config keys under <paramref name="prefix"/>) and refuses what is not
    /// implemented.</summary>
    internal ConfigChecks Validate(ConfigChecks checks, string prefix)
    {
        int kvHeads = NumKeyValueHeads ?? NumAttentionHeads;
        checks.Size($"{prefix}hidden_size", HiddenSize).Size($"{prefix}num_attention_heads", NumAttentionHeads)
            .Size($"{prefix}num_key_value_heads", kvHeads)
            .Size($"{prefix}intermediate_size", IntermediateSize)
            .Layers($"{prefix}num_hidden_layers", NumHiddenLayers)
            .Vocabulary($"{prefix}vocab_size", VocabSize)
            .Require(kvHeads < 1 || NumAttentionHeads % kvHeads == 0,
                $"{prefix}num_attention_heads = {NumAttentionHeads} is not a multiple of {prefix}num_key_value_heads = {kvHeads}")
            .Require(RopeScaling is null || RopeScaling.Value.ValueKind == JsonValueKind.Null, $"{prefix}rope_scaling is not supported")
            .Require(RopeTheta > 0 && double.IsFinite(RopeTheta), $"{prefix}rope_theta = {RopeTheta} must be a positive number")
            .Require(PretrainingTp == 1, $"{prefix}pretraining_tp other than 1 is not supported");
        if (HeadDim is int d) checks.Size($"{prefix}head_dim", d);
        else if (NumAttentionHeads >= 1 && HiddenSize % NumAttentionHeads != 0)
            checks.Require(false, $"{prefix}hidden_size = {HiddenSize} is not a multiple of {prefix}num_attention_heads = {NumAttentionHeads} (and head_dim is not given)");
        int headDim = HeadDim ?? (NumAttentionHeads >= 1 ? HiddenSize / NumAttentionHeads : 0);
        return checks.Require(headDim % 2 == 0, $"{prefix}head_dim = {headDim} must be even (rotary pairs)");
    }
}

/// <summary>transformers v4.45 <c>LlamaModel</c>: token embeddings, decoder layers (each possibly wrapped, as
/// OpenFlamingo wraps them), final RMSNorm.</summary>
internal sealed class LlamaModel : nn.Module
{
    [ComponentName(Name = "embed_tokens")] private readonly EmbeddingTable _embedTokens;
    [ComponentName(Name = "layers")] private readonly ModuleList<nn.Module> _layers = new();
    [ComponentName(Name = "norm")] private readonly LlamaRmsNorm _norm;
    private readonly LlamaDims _dims;
    private readonly double _ropeTheta;

    public LlamaModel(LlamaConfig config, Device? device, ScalarType? dtype, Func<int, nn.Module, nn.Module>? wrapLayer) : base(nameof(LlamaModel))
    {
        _dims = LlamaDims.Of(config);
        _ropeTheta = config.RopeTheta;
        _embedTokens = new EmbeddingTable(config.VocabSize, config.HiddenSize, device: device, dtype: dtype);
        DecoderLayers.Build(_layers, config.NumHiddenLayers, i => new LlamaDecoderLayer(_dims, i, device, dtype), wrapLayer);
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
    /// <param name="context">what wrapped layers get (Flamingo's media), or null.</param>
    public Tensor Forward(Tensor embeds, Tensor attentionMask, Tensor positions, KvCache? cache, ILayerContext? context)
    {
        using var scope = NewDisposeScope();
        // Eager attention: future and padded keys get the same finfo.min (not added twice), so a left-pad query,
        // which may see no key, softmaxes uniformly over all keys, as upstream's pad rows do.
        var mask = Attention.CausalPaddingMask(attentionMask, embeds.size(1), embeds.dtype);
        var (cos, sin) = Rotary.TablesAt(positions, _dims.HeadDim, _ropeTheta, embeds.dtype);
        var hidden = DecoderLayers.Run<LlamaDecoderLayer>(_layers, embeds, context, (layer, h) => layer.Forward(h, mask, cos, sin, cache));
        return _norm.forward(hidden).MoveToOuterDisposeScope();
    }
}

/// <summary>transformers v4.45 <c>LlamaForCausalLM</c> (modeling_llama.py; Touvron et al. 2023): the decoder and
/// an <c>lm_head</c>. Positions: driven by generation they are <c>cumsum(attention_mask) − 1</c> with padding at 1, as
/// <c>prepare_inputs_for_generation</c> computes them; a plain upstream <c>forward()</c> without <c>position_ids</c>
/// uses past … past + T − 1 in every row instead (<c>positionsFromMask: false</c>).</summary>
internal sealed class LlamaForCausalLM : nn.Module, IFlamingoHost
{
    [ComponentName(Name = "model")] private readonly LlamaModel _model;
    [ComponentName(Name = "lm_head")] private readonly Linear _lmHead;

    public LlamaForCausalLM(LlamaConfig config, Device? device = null, ScalarType? dtype = null, Func<int, nn.Module, nn.Module>? wrapLayer = null)
        : base(nameof(LlamaForCausalLM))
    {
        Config = config;
        _model = new LlamaModel(config, device, dtype, wrapLayer);
        _lmHead = Uninitialized.Linear(config.HiddenSize, config.VocabSize, hasBias: false,
            device: config.TieWordEmbeddings ? META : device, dtype: dtype);
        if (config.TieWordEmbeddings) _lmHead.weight = _model.EmbedTokensWeight;
        RegisterComponents();
    }

    public LlamaConfig Config { get; }

    public int HiddenSize => Config.HiddenSize;

    public int LayerCount => _model.LayerCount;

    public Tensor EmbedTokens(Tensor inputIds) => _model.Embed(inputIds);

    public Tensor Forward(Tensor inputsEmbeds, Tensor attentionMask, KvCache? cache, ILayerContext? context, bool positionsFromMask)
    {
        using var scope = NewDisposeScope();
        long past = cache?.SequenceLength ?? 0, fresh = inputsEmbeds.size(1);
        var positions = positionsFromMask
            ? Rotary.MaskPositions(attentionMask, past, fresh)
            : Scalars.Arange(past, past + fresh, ScalarType.Int64, inputsEmbeds.device).unsqueeze(0).expand(inputsEmbeds.size(0), fresh);
        return _lmHead.Apply(_model.Forward(inputsEmbeds, attentionMask, positions, cache, context)).MoveToOuterDisposeScope();
    }
}
