using Multimodal.Loading;

namespace Multimodal.Blip2;

/// <summary>Published BLIP-2 tensor names → <see cref="Blip2ForConditionalGeneration"/> keys. Module
/// fields mirror transformers' names, so the HF layout needs no renames; this table holds only the
/// legacy forms of real published checkpoints.</summary>
internal static class Blip2KeyMap
{
    public static WeightMap For(Blip2Config config) => ForLanguageModel(config.Normalize().TextConfig);

    /// <summary>The map of a BLIP-2-family wrapper (BLIP-2, InstructBLIP) around this language model: the ViT's legacy
    /// bias layout, and the language model's tied weights.</summary>
    public static WeightMap ForLanguageModel(Language.TextConfig text) => new()
    {
        Composites =
        [
            // LAVIS-converted ViTs store q_bias and v_bias; transformers builds qkv.bias = (q, 0, v)
            // because EVA's attention has no key bias.
            new CompositeRule(
                "vision_model.encoder.layers.*.self_attn.qkv.bias",
                ["vision_model.encoder.layers.*.self_attn.q_bias", "vision_model.encoder.layers.*.self_attn.v_bias"],
                parts => cat([parts[0], zeros_like(parts[1]), parts[1]]),
                shapes => shapes[0].Length == 1 && shapes[0].SequenceEqual(shapes[1]) ? [3 * shapes[0][0]] : [-1]),
        ],
        Tied = (Language.LanguageModels.TryFor(text)?.TiedKeys(text) ?? new Dictionary<string, string>())
            .ToDictionary(kv => "language_model." + kv.Key, kv => "language_model." + kv.Value),
    };
}
