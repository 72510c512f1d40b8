using Multimodal.Language;
using Multimodal.Loading;

namespace Multimodal.Flamingo;

/// <summary>The files of an OpenFlamingo model as published, and the settings that are not in any file
/// (they come from the model card: e.g. OpenFlamingo-3B-vitl-mpt1b has cross-attention every layer,
/// -4B every 2nd, -9B every 4th).</summary>
public sealed record FlamingoParts
{
    /// <summary>The open_clip model's state dict (<c>visual.*</c> plus the unused text tower), safetensors or .pt.</summary>
    public required string VisionEncoder { get; init; }

    /// <summary>The open_clip model config (e.g. ViT-L-14: embed_dim 768, vision width 1024, 24 layers, patch 14, QuickGELU).</summary>
    public required OpenClipModelConfig OpenClip { get; init; }

    /// <summary>The language model's transformers folder (config.json + safetensors).</summary>
    public required string LanguageModelFolder { get; init; }

    /// <summary>OpenFlamingo's <c>checkpoint.pt</c> (or a safetensors copy of it).</summary>
    public required string Adapter { get; init; }

    /// <summary>A gated block before decoder layer i when (i + 1) % n == 0.</summary>
    public required int CrossAttnEveryNLayers { get; init; }

    /// <summary><c>&lt;image&gt;</c> id in the extended tokenizer.</summary>
    public required int MediaTokenId { get; init; }

    /// <summary><c>&lt;|endofchunk|&gt;</c> id.</summary>
    public required int EocTokenId { get; init; }

    /// <summary><c>&lt;PAD&gt;</c> id.</summary>
    public int? PadTokenId { get; init; }

    /// <summary>The config: perceiver depth and latents, and the resized vocabulary, read off the adapter's weights.</summary>
    internal FlamingoConfig ToConfig(LanguageModelDescriptor language, TextConfig lm, ITensorSource adapter)
    {
        int langDim = language.HiddenSize(lm);
        lm = language.Normalize(lm);
        var names = adapter.Tensors;
        int depth = names.Keys.Count(k => k.StartsWith("perceiver.layers.", StringComparison.Ordinal) && k.EndsWith(".0.to_q.weight", StringComparison.Ordinal));
        var latents = names.TryGetValue("perceiver.latents", out var l) ? l.Shape
            : throw new CheckpointFormatException(adapter.Description, "it has no perceiver.latents: not an OpenFlamingo checkpoint.");
        string embedKey = "lang_encoder." + language.EmbeddingKey;
        int vocab = names.TryGetValue(embedKey, out var e) ? (int)e.Shape[0]
            : throw new CheckpointFormatException(adapter.Description, $"it has no {embedKey} (the trained, resized embeddings).");
        var vision = OpenClip.Vision;
        return new FlamingoConfig
        {
            ClipModelCfg = OpenClip,
            LangEncoderConfig = lm,
            LenTokenizer = vocab,
            EocTokenId = EocTokenId,
            MediaTokenId = MediaTokenId,
            PadTokenId = PadTokenId,
            VisDim = vision.Width,
            LangDim = langDim,
            CrossAttnEveryNLayers = CrossAttnEveryNLayers,
            Perceiver = new PerceiverConfig { Dim = (int)latents[1], Depth = depth, NumLatents = (int)latents[0] },
            GatedCrossAttn = new GatedCrossAttentionConfig { Dim = langDim, DimVisual = vision.Width },
        };
    }
}
