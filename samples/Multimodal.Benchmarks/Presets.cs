using Multimodal.Blip2;
using Multimodal.Language.Opt;
using Multimodal.QFormer;
using Multimodal.Vision;

namespace Multimodal.Benchmarks;

/// <summary>The model shapes the benchmark builds with random weights.</summary>
internal static class Presets
{
    /// <summary>Salesforce/blip2-opt-2.7b's published dimensions: EVA ViT-g (39 × 1408), the Q-Former, OPT-2.7b
    /// (32 × 2560); 3.87 B parameters, 15.5 GB in float32, published as two shards.</summary>
    public static Blip2Config Opt27B() => new Blip2Config
    {
        VisionConfig = new Blip2VisionConfig { HiddenSize = 1408, IntermediateSize = 6144, NumHiddenLayers = 39, NumAttentionHeads = 16, ImageSize = 224, PatchSize = 14 },
        QformerConfig = new QFormerConfig(),
        TextConfig = new OptConfig { HiddenSize = 2560, FfnDim = 10240, NumHiddenLayers = 32, NumAttentionHeads = 32, WordEmbedProjDim = 2560 },
        NumQueryTokens = 32,
    }.Normalize();

    /// <summary>1.07 B parameters: the same ViT-g at 24 layers, the Q-Former, a 24-layer 1024-wide OPT.</summary>
    public static Blip2Config Small() => (Opt27B() with
    {
        VisionConfig = Opt27B().VisionConfig with { NumHiddenLayers = 24 },
        TextConfig = new OptConfig { HiddenSize = 1024, FfnDim = 4096, NumHiddenLayers = 24, NumAttentionHeads = 16, WordEmbedProjDim = 1024 },
    }).Normalize();

    public static Blip2Config Named(string name) => name switch
    {
        "2.7b" => Opt27B(),
        "small" => Small(),
        _ => throw new ArgumentException($"--preset {name}: expected 2.7b or small."),
    };

    /// <summary>Shards like the hub's: at most this many bytes per file.</summary>
    public static long ShardBytes(string name) => name == "2.7b" ? 10L << 30 : 5L << 30;
}
