using System.Text.Json;
using System.Text.Json.Serialization;

using Multimodal.Common;

namespace Multimodal.Language.Mpt;

/// <summary>transformers v4.45.1 <c>MptConfig</c> (configuration_mpt.py); initializers are upstream's
/// defaults (MPT-7B's shape).</summary>
public sealed record MptConfig : TextConfig
{
    /// <inheritdoc/>
    public override string ModelType { get; init; } = "mpt";

    /// <inheritdoc/>
    [JsonIgnore] public override bool IsDecoderOnly => true;

    /// <summary><c>d_model</c> (default 2048): Width.</summary>
    public int DModel { get; init; } = 2048;

    /// <summary><c>n_heads</c> (default 16): Attention heads.</summary>
    public int NHeads { get; init; } = 16;

    /// <summary><c>n_layers</c> (default 24): Layers.</summary>
    public int NLayers { get; init; } = 24;

    /// <summary>Read and kept, but not what the FFN is built with: transformers v4.45.1 <c>MptMLP</c> makes
    /// <c>up_proj</c>/<c>down_proj</c> 4·d_model whatever this says (see <see cref="FfnWidth"/>).</summary>
    public int ExpansionRatio { get; init; } = 4;

    /// <summary>The FFN width the weights have: 4·d_model for transformers-format MPT (upstream ignores
    /// <c>expansion_ratio</c>); mosaic_gpt folders set their own <c>mlp_ratio</c>·d_model.</summary>
    [JsonIgnore] public int FfnWidth { get => _ffnWidth ?? 4 * DModel; init => _ffnWidth = value; }
    private int? _ffnWidth;

    /// <summary>Length of the ALiBi table (the bias itself only depends on key distance).</summary>
    public int MaxSeqLen { get; init; } = 2048;

    /// <inheritdoc/>
    [System.Text.Json.Serialization.JsonIgnore] public override int? ContextLength => MaxSeqLen;

    /// <summary><c>vocab_size</c> (default 50368): Vocabulary size.</summary>
    public int VocabSize { get; init; } = 50368;

    /// <summary><c>resid_pdrop</c> (default 0): used in training only; inference reads it and ignores it.</summary>
    public double ResidPdrop { get; init; }

    /// <summary><c>layer_norm_epsilon</c> (default 1e-5): LayerNorm epsilon.</summary>
    public double LayerNormEpsilon { get; init; } = 1e-5;

    /// <summary><c>emb_pdrop</c> (default 0): used in training only; inference reads it and ignores it.</summary>
    public double EmbPdrop { get; init; }

    /// <summary>Learned positions (HF's port always uses ALiBi; kept for the record).</summary>
    public bool LearnedPosEmb { get; init; } = true;

    /// <summary>Attention settings (<c>alibi</c>, <c>alibi_bias_max</c>, <c>softmax_scale</c>, <c>clip_qkv</c>, <c>qk_ln</c>...).</summary>
    public JsonElement? AttnConfig { get; init; }

    /// <summary>Where weights are initialised (training only).</summary>
    public string InitDevice { get; init; } = "cpu";

    /// <summary>Logit scale ("inv_sqrt_d_model" or a number), or null.</summary>
    public JsonElement? LogitScale { get; init; }

    /// <summary><c>no_bias</c> (default true): No biases anywhere (MPT's default).</summary>
    public bool NoBias { get; init; } = true;

    /// <summary><c>verbose</c> (default 0): Logging only.</summary>
    public int Verbose { get; init; }

    /// <summary><c>embedding_fraction</c> (default 1.0): used in training only; inference reads it and ignores it.</summary>
    public double EmbeddingFraction { get; init; } = 1.0;

    /// <summary>"low_precision_layernorm": a LayerNorm computed in the input dtype.</summary>
    public string NormType { get; init; } = "low_precision_layernorm";

    /// <summary>Whether generation uses the KV cache by default (false in MPT's config).</summary>
    public bool UseCache { get; init; }

    /// <summary><c>initializer_range</c> (default 0.02): used in training only; inference reads it and ignores it.</summary>
    public double InitializerRange { get; init; } = 0.02;

    /// <summary>Begin-of-sequence id (PretrainedConfig's, usually overridden).</summary>
    public int? BosTokenId { get; init; }

    /// <summary><c>eos_token_id</c> (default null): End-of-sequence id.</summary>
    public int? EosTokenId { get; init; }

    /// <summary><c>pad_token_id</c> (default null): Padding id.</summary>
    public int? PadTokenId { get; init; }

    /// <summary><c>lm_head</c> shares <c>wte</c>.</summary>
    public bool TieWordEmbeddings { get; init; } = true;

    /// <summary>ALiBi's maximum bias exponent (8 unless <c>attn_config.alibi_bias_max</c> says otherwise).</summary>
    [JsonIgnore]
    public double AlibiBiasMax => AttnConfig is JsonElement a && a.TryGetProperty("alibi_bias_max", out var v) ? v.GetDouble() : 8;

    /// <summary>Checks the settings the port supports: ALiBi, default softmax scale, no qkv clipping, no qk LayerNorm;
    /// keys named under <paramref name="prefix"/>.</summary>
    internal ConfigChecks Validate(ConfigChecks checks, string prefix)
    {
        string source = checks.Source;
        if (AttnConfig is JsonElement a)
        {
            if (a.TryGetProperty("alibi", out var alibi) && alibi.ValueKind == JsonValueKind.False)
                throw new NotSupportedException($"{source}: {prefix}attn_config.alibi = false is not supported (HF's MPT always uses ALiBi).");
            foreach (var key in new[] { "softmax_scale", "clip_qkv" })
                if (a.TryGetProperty(key, out var v) && v.ValueKind != JsonValueKind.Null)
                    throw new NotSupportedException($"{source}: {prefix}attn_config.{key} = {v.GetRawText()} is not supported.");
            if (a.TryGetProperty("qk_ln", out var qk) && qk.ValueKind == JsonValueKind.True)
                throw new NotSupportedException($"{source}: {prefix}attn_config.qk_ln = true is not supported.");
        }
        if (LogitScale is JsonElement ls && ls.ValueKind != JsonValueKind.Null)
            throw new NotSupportedException($"{source}: {prefix}logit_scale = {ls.GetRawText()} is not supported.");
        return checks
            .Heads($"{prefix}d_model", DModel, $"{prefix}n_heads", NHeads)
            .Layers($"{prefix}n_layers", NLayers)
            .Vocabulary($"{prefix}vocab_size", VocabSize)
            .Size($"{prefix}expansion_ratio", ExpansionRatio, 1_000);
    }
}
