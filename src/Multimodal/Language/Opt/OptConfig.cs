using System.Text.Json.Serialization;

namespace Multimodal.Language.Opt;

/// <summary>transformers v4.45.1 <c>OPTConfig</c> (configuration_opt.py); initializers are upstream's defaults.</summary>
public sealed record OptConfig : TextConfig
{
    /// <inheritdoc/>
    public override string ModelType { get; init; } = "opt";

    /// <inheritdoc/>
    [JsonIgnore] public override bool IsDecoderOnly => true;

    /// <summary>Vocabulary size.</summary>
    public int VocabSize { get; init; } = 50272;

    /// <summary>Decoder width.</summary>
    public int HiddenSize { get; init; } = 768;

    /// <summary>Decoder layers.</summary>
    public int NumHiddenLayers { get; init; } = 12;

    /// <summary>FFN inner width.</summary>
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

    /// <summary>Training only.</summary>
    public double Dropout { get; init; } = 0.1;

    /// <summary>Training only.</summary>
    public double AttentionDropout { get; init; }

    /// <summary>Attention heads.</summary>
    public int NumAttentionHeads { get; init; } = 12;

    /// <summary>FFN activation.</summary>
    public string ActivationFunction { get; init; } = "relu";

    /// <summary>Training only.</summary>
    public double Layerdrop { get; init; }

    /// <summary>Training only.</summary>
    public double InitStd { get; init; } = 0.02;

    /// <summary>Whether generation uses the KV cache by default.</summary>
    public bool UseCache { get; init; } = true;

    /// <summary>Padding id.</summary>
    public int PadTokenId { get; init; } = 1;

    /// <summary>Begin-of-sequence id.</summary>
    public int BosTokenId { get; init; } = 2;

    /// <summary>End-of-sequence id.</summary>
    public int EosTokenId { get; init; } = 2;

    /// <summary>Biases in the linear layers.</summary>
    public bool EnableBias { get; init; } = true;

    /// <summary>LayerNorms have weight and bias.</summary>
    public bool LayerNormElementwiseAffine { get; init; } = true;

    /// <summary><c>lm_head</c> shares <c>embed_tokens</c>.</summary>
    public bool TieWordEmbeddings { get; init; } = true;

    /// <summary>Effective embedding width.</summary>
    [JsonIgnore] public int EmbedDim => WordEmbedProjDim ?? HiddenSize;
}
