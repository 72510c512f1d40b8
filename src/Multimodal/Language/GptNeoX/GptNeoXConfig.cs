using System.Text.Json;
using System.Text.Json.Serialization;

using Multimodal.Common;

namespace Multimodal.Language.GptNeoX;

/// <summary>transformers v4.45.1 <c>GPTNeoXConfig</c> (configuration_gpt_neox.py); initializers are
/// upstream's defaults, which follow Pythia/NeoX-20B. RedPajama-INCITE-3B (OpenFlamingo-4B) differs in
/// <c>rotary_pct</c> (1.0), <c>use_parallel_residual</c> (false) and <c>eos_token_id</c> (0): always read them.</summary>
public sealed record GptNeoXConfig : TextConfig
{
    /// <inheritdoc/>
    public override string ModelType { get; init; } = "gpt_neox";

    /// <inheritdoc/>
    [JsonIgnore] public override bool IsDecoderOnly => true;

    /// <summary><c>vocab_size</c> (default 50432): Vocabulary size.</summary>
    public int VocabSize { get; init; } = 50432;
    /// <summary><c>hidden_size</c> (default 6144): Width.</summary>
    public int HiddenSize { get; init; } = 6144;
    /// <summary><c>num_hidden_layers</c> (default 44): Layers.</summary>
    public int NumHiddenLayers { get; init; } = 44;
    /// <summary><c>num_attention_heads</c> (default 64): Heads.</summary>
    public int NumAttentionHeads { get; init; } = 64;
    /// <summary><c>intermediate_size</c> (default 24576): MLP width.</summary>
    public int IntermediateSize { get; init; } = 24576;
    /// <summary><c>hidden_act</c> (default "gelu"): MLP activation ("gelu" = exact erf).</summary>
    public string HiddenAct { get; init; } = "gelu";
    /// <summary>Fraction of each head's dimensions that are rotated.</summary>
    public double RotaryPct { get; init; } = 0.25;
    /// <summary><c>rotary_emb_base</c> (default 10000): RoPE base.</summary>
    public double RotaryEmbBase { get; init; } = 10000;
    /// <summary>Mirror of <see cref="RotaryPct"/> written by transformers ≥ 4.44.</summary>
    public double? PartialRotaryFactor { get; init; }
    /// <summary>Mirror of <see cref="RotaryEmbBase"/> written by transformers ≥ 4.44.</summary>
    public double? RopeTheta { get; init; }
    /// <summary><c>attention_dropout</c> (default 0): used in training only; inference reads it and ignores it.</summary>
    public double AttentionDropout { get; init; }
    /// <summary><c>hidden_dropout</c> (default 0): used in training only; inference reads it and ignores it.</summary>
    public double HiddenDropout { get; init; }
    /// <summary><c>classifier_dropout</c> (default 0.1): used in training only; inference reads it and ignores it.</summary>
    public double ClassifierDropout { get; init; } = 0.1;
    /// <summary>Positions the model was trained on (RoPE needs no table).</summary>
    public int MaxPositionEmbeddings { get; init; } = 2048;

    /// <inheritdoc/>
    [System.Text.Json.Serialization.JsonIgnore] public override int? ContextLength => MaxPositionEmbeddings;
    /// <summary><c>initializer_range</c> (default 0.02): used in training only; inference reads it and ignores it.</summary>
    public double InitializerRange { get; init; } = 0.02;
    /// <summary><c>layer_norm_eps</c> (default 1e-5): LayerNorm epsilon.</summary>
    public double LayerNormEps { get; init; } = 1e-5;
    /// <summary>Whether generation uses the KV cache by default.</summary>
    public bool UseCache { get; init; } = true;
    /// <summary><c>bos_token_id</c> (default 0): Begin-of-sequence id.</summary>
    public int? BosTokenId { get; init; } = 0;
    /// <summary><c>eos_token_id</c> (default 2): End-of-sequence id.</summary>
    public int? EosTokenId { get; init; } = 2;
    /// <summary><c>pad_token_id</c> (default null): Padding id.</summary>
    public int? PadTokenId { get; init; }
    /// <summary><c>embed_out</c> shares <c>embed_in</c> (false for every published NeoX).</summary>
    public bool TieWordEmbeddings { get; init; }
    /// <summary>x + attn(ln1(x)) + mlp(ln2(x)) (Pythia) rather than the sequential form (RedPajama-3B).</summary>
    public bool UseParallelResidual { get; init; } = true;
    /// <summary><c>rope_scaling</c> (default null): RoPE scaling; only null is supported.</summary>
    public JsonElement? RopeScaling { get; init; }
    /// <summary>Biases on <c>query_key_value</c> and <c>dense</c> (absent from older files, meaning true).</summary>
    public bool AttentionBias { get; init; } = true;

    /// <summary>Checks what the port supports, naming keys under <paramref name="prefix"/>.</summary>
    internal ConfigChecks Validate(ConfigChecks checks, string prefix)
    {
        if (RopeScaling is JsonElement r && r.ValueKind != JsonValueKind.Null)
            throw new NotSupportedException($"{checks.Source}: {prefix}rope_scaling = {r.GetRawText()} is not supported.");
        return checks
            .Heads($"{prefix}hidden_size", HiddenSize, $"{prefix}num_attention_heads", NumAttentionHeads)
            .Size($"{prefix}intermediate_size", IntermediateSize)
            .Layers($"{prefix}num_hidden_layers", NumHiddenLayers)
            .Vocabulary($"{prefix}vocab_size", VocabSize)
            .Require(RotaryPct > 0 && RotaryPct <= 1, $"{prefix}rotary_pct = {RotaryPct} must be in (0, 1]");
    }
}
