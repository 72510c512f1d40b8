using Multimodal.Common;

namespace Multimodal.QFormer;

/// <summary>transformers v4.45.1 <c>Blip2QFormerConfig</c> (configuration_blip_2.py).</summary>
public sealed record QFormerConfig : PretrainedConfig
{
    /// <summary><c>model_type</c> (default "blip_2_qformer"): "blip_2_qformer".</summary>
    public string ModelType { get; init; } = "blip_2_qformer";

    /// <summary><c>vocab_size</c> (default 30522): Text vocabulary (text path only).</summary>
    public int VocabSize { get; init; } = 30522;

    /// <summary><c>hidden_size</c> (default 768): Width.</summary>
    public int HiddenSize { get; init; } = 768;

    /// <summary><c>num_hidden_layers</c> (default 12): Layers.</summary>
    public int NumHiddenLayers { get; init; } = 12;

    /// <summary><c>num_attention_heads</c> (default 12): Attention heads.</summary>
    public int NumAttentionHeads { get; init; } = 12;

    /// <summary><c>intermediate_size</c> (default 3072): FFN inner width.</summary>
    public int IntermediateSize { get; init; } = 3072;

    /// <summary><c>hidden_act</c> (default "gelu"): FFN activation.</summary>
    public string HiddenAct { get; init; } = "gelu";

    /// <summary><c>hidden_dropout_prob</c> (default 0.1): used in training only; inference reads it and ignores it.</summary>
    public double HiddenDropoutProb { get; init; } = 0.1;

    /// <summary><c>attention_probs_dropout_prob</c> (default 0.1): used in training only; inference reads it and ignores it.</summary>
    public double AttentionProbsDropoutProb { get; init; } = 0.1;

    /// <summary><c>max_position_embeddings</c> (default 512): Text positions (text path only).</summary>
    public int MaxPositionEmbeddings { get; init; } = 512;

    /// <summary><c>initializer_range</c> (default 0.02): used in training only; inference reads it and ignores it.</summary>
    public double InitializerRange { get; init; } = 0.02;

    /// <summary><c>layer_norm_eps</c> (default 1e-12): LayerNorm epsilon.</summary>
    public double LayerNormEps { get; init; } = 1e-12;

    /// <summary><c>pad_token_id</c> (default 0): Text padding id.</summary>
    public int PadTokenId { get; init; }

    /// <summary>Only "absolute" is used by published BLIP-2 checkpoints.</summary>
    public string PositionEmbeddingType { get; init; } = "absolute";

    /// <summary>Layer i has cross-attention to the image when i % frequency == 0.</summary>
    public int CrossAttentionFrequency { get; init; } = 2;

    /// <summary>Width of the image features; <see cref="Blip2.Blip2Config.Normalize"/> sets it to the vision width.</summary>
    public int EncoderHiddenSize { get; init; } = 1408;

    /// <summary>Whether the Q-Former also has the text path (<c>intermediate</c>/<c>output</c>; ITM/ITC models).</summary>
    public bool UseQformerTextInput { get; init; }
}
