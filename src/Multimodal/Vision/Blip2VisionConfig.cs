using Multimodal.Common;

namespace Multimodal.Vision;

/// <summary>transformers v4.45.1 <c>Blip2VisionConfig</c> (configuration_blip_2.py): the EVA ViT-g of
/// BLIP-2 by default.</summary>
public sealed record Blip2VisionConfig : PretrainedConfig
{
    /// <summary>"blip_2_vision_model".</summary>
    public string ModelType { get; init; } = "blip_2_vision_model";

    /// <summary>Encoder width.</summary>
    public int HiddenSize { get; init; } = 1408;

    /// <summary>MLP inner width.</summary>
    public int IntermediateSize { get; init; } = 6144;

    /// <summary>Encoder layers.</summary>
    public int NumHiddenLayers { get; init; } = 39;

    /// <summary>Attention heads.</summary>
    public int NumAttentionHeads { get; init; } = 16;

    /// <summary>Input resolution.</summary>
    public int ImageSize { get; init; } = 224;

    /// <summary>Patch size.</summary>
    public int PatchSize { get; init; } = 14;

    /// <summary>MLP activation.</summary>
    public string HiddenAct { get; init; } = "gelu";

    /// <summary>LayerNorm epsilon.</summary>
    public double LayerNormEps { get; init; } = 1e-6;

    /// <summary>Training only.</summary>
    public double AttentionDropout { get; init; }

    /// <summary>Training only.</summary>
    public double InitializerRange { get; init; } = 1e-10;

    /// <summary>q and v biases (k has none) in the fused qkv projection.</summary>
    public bool QkvBias { get; init; } = true;

    /// <summary>Patches per image side.</summary>
    public int PatchesPerSide => ImageSize / PatchSize;
}
