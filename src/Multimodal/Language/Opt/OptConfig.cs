using System.Text.Json.Serialization;

namespace Multimodal.Language.Opt;

/// <summary>transformers v4.45.1 <c>OPTConfig</c> (configuration_opt.py); initializers are upstream's defaults.</summary>
public sealed record OptConfig : TextConfig
{
    /// <inheritdoc/>
    public override string ModelType { get; init; } = "opt";

    /// <inheritdoc/>
    [JsonIgnore] public override bool IsDecoderOnly => true;

    /// <summary><c>vocab_size</c> (default 50272): Vocabulary size.</summary>
    public int VocabSize { get; init; } = 50272;

    /// <summary><c>hidden_size</c> (default 768): Decoder width.</summary>
    public int HiddenSize { get; init; } = 768;

    /// <summary><c>num_hidden_layers</c> (default 12): Decoder layers.</summary>
    public int NumHiddenLayers { get; init; } = 12;

    /// <summary><c>ffn_dim</c> (default 3072): FFN inner width.</summary>
    public int FfnDim { get; init; } = 3072;

    /// <summary>Learned positions (the table has two more rows, see <see cref="OptLearnedPositionalEmbedding"/>).</summary>
    public int MaxPositionEmbeddings { get; init; } = 2048;

    /// <inheritdoc/>
    [System.Text.Json.Serialization.JsonIgnore] public override int? ContextLength => MaxPositionEmbeddings;

    /// <summary>Pre-LN (true: 125m…66b except 350m) or post-LN (350m).</summary>
    public bool DoLayerNormBefore { get; init; } = true;

    /// <summary>Drops the final LayerNorm (a legacy conversion flag).</summary>
    [JsonPropertyName("_remove_final_layer_norm")] public bool RemoveFinalLayerNorm { get; init; }

    /// <summary>Embedding width; when it differs from <see cref="HiddenSize"/> (350m) the decoder has
    /// <c>project_in</c>/<c>project_out</c>. Null means <see cref="HiddenSize"/>.</summary>
    public int? WordEmbedProjDim { get; init; }

    /// <summary><c>dropout</c> (default 0.1): used in training only; inference reads it and ignores it.</summary>
    public double Dropout { get; init; } = 0.1;

    /// <summary><c>attention_dropout</c> (default 0): used in training only; inference reads it and ignores it.</summary>
    public double AttentionDropout { get; init; }

    /// <summary><c>num_attention_heads</c> (default 12): Attention heads.</summary>
    public int NumAttentionHeads { get; init; } = 12;

    /// <summary><c>activation_function</c> (default "relu"): FFN activation.</summary>
    public string ActivationFunction { get; init; } = "relu";

    /// <summary><c>layerdrop</c> (default 0): used in training only; inference reads it and ignores it.</summary>
    public double Layerdrop { get; init; }

    /// <summary><c>init_std</c> (default 0.02): used in training only; inference reads it and ignores it.</summary>
    public double InitStd { get; init; } = 0.02;

    /// <summary>Whether generation uses the KV cache by default.</summary>
    public bool UseCache { get; init; } = true;

    /// <summary><c>pad_token_id</c> (default 1): Padding id.</summary>
    public int PadTokenId { get; init; } = 1;

    /// <summary><c>bos_token_id</c> (default 2): Begin-of-sequence id.</summary>
    public int BosTokenId { get; init; } = 2;

    /// <summary><c>eos_token_id</c> (default 2): End-of-sequence id.</summary>
    public int EosTokenId { get; init; } = 2;

    /// <summary><c>enable_bias</c> (default true): Biases in the linear layers.</summary>
    public bool EnableBias { get; init; } = true;

    /// <summary><c>layer_norm_elementwise_affine</c> (default true): LayerNorms have weight and bias.</summary>
    public bool LayerNormElementwiseAffine { get; init; } = true;

    /// <summary><c>lm_head</c> shares <c>embed_tokens</c>.</summary>
    public bool TieWordEmbeddings { get; init; } = true;

    /// <summary>Effective embedding width.</summary>
    [JsonIgnore] public int EmbedDim => WordEmbedProjDim ?? HiddenSize;
}
