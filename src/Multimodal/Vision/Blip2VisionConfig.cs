using Multimodal.Common;

namespace Multimodal.Vision;

/// <summary>transformers v4.45.1 <c>Blip2VisionConfig</c> (configuration_blip_2.py): the EVA ViT-g of
/// BLIP-2 by default.</summary>
public sealed record Blip2VisionConfig : PretrainedConfig
{
    /// <summary><c>model_type</c> (default "blip_2_vision_model"): "blip_2_vision_model".</summary>
    public string ModelType { get; init; } = "blip_2_vision_model";

    /// <summary><c>hidden_size</c> (default 1408): Encoder width.</summary>
    public int HiddenSize { get; init; } = 1408;

    /// <summary><c>intermediate_size</c> (default 6144): MLP inner width.</summary>
    public int IntermediateSize { get; init; } = 6144;

    /// <summary><c>num_hidden_layers</c> (default 39): Encoder layers.</summary>
    public int NumHiddenLayers { get; init; } = 39;

    /// <summary><c>num_attention_heads</c> (default 16): Attention heads.</summary>
    public int NumAttentionHeads { get; init; } = 16;

    /// <summary><c>image_size</c> (default 224): Input resolution.</summary>
    public int ImageSize { get; init; } = 224;

    /// <summary><c>patch_size</c> (default 14): Patch size.</summary>
    public int PatchSize { get; init; } = 14;

    /// <summary><c>hidden_act</c> (default "gelu"): MLP activation.</summary>
    public string HiddenAct { get; init; } = "gelu";

    /// <summary><c>layer_norm_eps</c> (default 1e-6): LayerNorm epsilon.</summary>
    public double LayerNormEps { get; init; } = 1e-6;

    /// <summary><c>attention_dropout</c> (default 0): used in training only; inference reads it and ignores it.</summary>
    public double AttentionDropout { get; init; }

    /// <summary><c>initializer_range</c> (default 1e-10): used in training only; inference reads it and ignores it.</summary>
    public double InitializerRange { get; init; } = 1e-10;

    /// <summary>q and v biases (k has none) in the fused qkv projection.</summary>
    public bool QkvBias { get; init; } = true;

    /// <summary>Patches per image side.</summary>
    public int PatchesPerSide => ImageSize / PatchSize;
}
