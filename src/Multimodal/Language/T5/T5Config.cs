using System.Text.Json.Serialization;

namespace Multimodal.Language.T5;

/// <summary>transformers v4.45.1 <c>T5Config</c> (configuration_t5.py); initializers are upstream's
/// defaults (t5-small's shape). Flan-T5 sets <c>feed_forward_proj = "gated-gelu"</c> and an untied head.</summary>
public sealed record T5Config : TextConfig
{
    /// <inheritdoc/>
    public override string ModelType { get; init; } = "t5";
    /// <inheritdoc/>
    [JsonIgnore] public override bool IsDecoderOnly => false;
    /// <summary><c>vocab_size</c> (default 32128): Vocabulary.</summary>
    public int VocabSize { get; init; } = 32128;
    /// <summary><c>d_model</c> (default 512): Width.</summary>
    public int DModel { get; init; } = 512;
    /// <summary>Width of one head (heads · d_kv need not equal d_model).</summary>
    public int DKv { get; init; } = 64;
    /// <summary><c>d_ff</c> (default 2048): FFN width.</summary>
    public int DFf { get; init; } = 2048;
    /// <summary><c>num_layers</c> (default 6): Encoder layers.</summary>
    public int NumLayers { get; init; } = 6;
    /// <summary>Decoder layers (null: as many as the encoder).</summary>
    public int? NumDecoderLayers { get; init; }
    /// <summary><c>num_heads</c> (default 8): Heads.</summary>
    public int NumHeads { get; init; } = 8;
    /// <summary><c>relative_attention_num_buckets</c> (default 32): Relative-position buckets.</summary>
    public int RelativeAttentionNumBuckets { get; init; } = 32;
    /// <summary>Distance beyond which positions share the last bucket.</summary>
    public int RelativeAttentionMaxDistance { get; init; } = 128;
    /// <summary><c>dropout_rate</c> (default 0.1): used in training only; inference reads it and ignores it.</summary>
    public double DropoutRate { get; init; } = 0.1;
    /// <summary><c>classifier_dropout</c> (default 0): used in training only; inference reads it and ignores it.</summary>
    public double ClassifierDropout { get; init; }
    /// <summary><c>layer_norm_epsilon</c> (default 1e-6): RMS norm epsilon.</summary>
    public double LayerNormEpsilon { get; init; } = 1e-6;
    /// <summary><c>initializer_factor</c> (default 1.0): used in training only; inference reads it and ignores it.</summary>
    public double InitializerFactor { get; init; } = 1.0;
    /// <summary>"relu" (T5 1.0) or "gated-gelu" (T5 1.1, Flan-T5): the FFN.</summary>
    public string FeedForwardProj { get; init; } = "relu";
    /// <summary><c>use_cache</c> (default true): Whether generation uses the KV cache.</summary>
    public bool UseCache { get; init; } = true;
    /// <summary>Padding id (also the decoder start in T5).</summary>
    public int PadTokenId { get; init; }
    /// <summary><c>eos_token_id</c> (default 1): End-of-sequence id.</summary>
    public int EosTokenId { get; init; } = 1;
    /// <summary><c>decoder_start_token_id</c> (default null): First decoder id.</summary>
    public int? DecoderStartTokenId { get; init; }
    /// <summary>Derived by upstream from <see cref="FeedForwardProj"/>; written into configs.</summary>
    public bool? IsGatedAct { get; init; }
    /// <summary>Derived by upstream ("gelu_new" for gated-gelu); written into configs.</summary>
    public string? DenseActFn { get; init; }
    /// <summary>T5 and BLIP-2 configs also write it (always true for T5).</summary>
    public bool IsEncoderDecoder { get; init; } = true;
    /// <summary><c>bos_token_id</c> (default null): Unused by T5 (no BOS).</summary>
    public int? BosTokenId { get; init; }
    /// <summary>Head tied to <c>shared</c> (then scaled by d_model^−0.5); false for Flan-T5 and T5 1.1.</summary>
    public bool TieWordEmbeddings { get; init; } = true;

    /// <summary>Whether the FFN is gated (wi_0, wi_1).</summary>
    [JsonIgnore] public bool Gated => FeedForwardProj.StartsWith("gated-", StringComparison.Ordinal);

    /// <summary>The FFN activation: <c>dense_act_fn</c> when the file has it (T5Config derives it from
    /// <c>feed_forward_proj</c>, then the explicit key overrides it: the published InstructBLIP Flan-T5 configs say
    /// "gelu" beside "gated-gelu"), else derived ("gated-gelu" means gelu_new, as upstream maps it).</summary>
    [JsonIgnore] public string Activation
    {
        get
        {
            if (DenseActFn is { } explicitAct) return explicitAct;
            var act = Gated ? FeedForwardProj["gated-".Length..] : FeedForwardProj;
            return act == "gelu" ? "gelu_new" : act;
        }
    }

    /// <summary>Decoder layers.</summary>
    [JsonIgnore] public int DecoderLayers => NumDecoderLayers ?? NumLayers;
}
