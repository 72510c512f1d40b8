using Multimodal.Common;

namespace Multimodal.QFormer;

/// <summary>transformers v4.45.1 <c>Blip2QFormerConfig</c> (configuration_blip_2.py).</summary>
public sealed record QFormerConfig : PretrainedConfig
{
    /// <summary>"blip_2_qformer".</summary>
    public string ModelType { get; init; } = "blip_2_qformer";

    /// <summary>Text vocabulary (text path only).</summary>
    public int VocabSize { get; init; } = 30522;

    /// <summary>Width.</summary>
    public int HiddenSize { get; init; } = 768;

    /// <summary>Layers.</summary>
    public int NumHiddenLayers { get; init; } = 12;

    /// <summary>Attention heads.</summary>
    public int NumAttentionHeads { get; init; } = 12;

    /// <summary>FFN inner width.</summary>
    public int IntermediateSize { get; init; } = 3072;

    /// <summary>FFN activation.</summary>
    public string HiddenAct { get; init; } = "gelu";

    /// <summary>Training only.</summary>
    public double HiddenDropoutProb { get; init; } = 0.1;

    /// <summary>Training only.</summary>
    public double AttentionProbsDropoutProb { get; init; } = 0.1;

    /// <summary>Text positions (text path only).</summary>
    public int MaxPositionEmbeddings { get; init; } = 512;

    /// <summary>Training only.</summary>
    public double InitializerRange { get; init; } = 0.02;

    /// <summary>LayerNorm epsilon.</summary>
    public double LayerNormEps { get; init; } = 1e-12;

    /// <summary>Text padding id.</summary>
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
