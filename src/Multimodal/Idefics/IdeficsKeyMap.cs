using Multimodal.Loading;

namespace Multimodal.Idefics;

/// <summary>Published IDEFICS tensor names → <see cref="IdeficsForVisionText2Text"/> keys. Everything but the
/// vision tower mirrors transformers' names; the tower is the one CLIP implementation
/// (<see cref="Vision.ClipVisionTransformer"/>), which uses open_clip's names, so transformers'
/// <c>IdeficsVisionTransformer</c> names are renamed here and its separate q/k/v projections stacked into
/// open_clip's <c>in_proj</c> (q, k, v order, as <c>nn.MultiheadAttention</c> splits it).</summary>
internal static class IdeficsKeyMap
{
    private const string Vision = "model.vision_model.";
    private const string Layer = Vision + "encoder.layers.*.";
    private const string Block = Vision + "transformer.resblocks.*.";

    public static readonly WeightMap Map = new()
    {
        Renames =
        [
            (Vision + "embeddings.class_embedding", Vision + "class_embedding"),
            (Vision + "embeddings.patch_embedding.weight", Vision + "conv1.weight"),
            (Vision + "embeddings.position_embedding.weight", Vision + "positional_embedding"),
            (Vision + "pre_layrnorm.weight", Vision + "ln_pre.weight"),
            (Vision + "pre_layrnorm.bias", Vision + "ln_pre.bias"),
            (Vision + "post_layernorm.weight", Vision + "ln_post.weight"),
            (Vision + "post_layernorm.bias", Vision + "ln_post.bias"),
            (Layer + "self_attn.out_proj.weight", Block + "attn.out_proj.weight"),
            (Layer + "self_attn.out_proj.bias", Block + "attn.out_proj.bias"),
            (Layer + "layer_norm1.weight", Block + "ln_1.weight"),
            (Layer + "layer_norm1.bias", Block + "ln_1.bias"),
            (Layer + "layer_norm2.weight", Block + "ln_2.weight"),
            (Layer + "layer_norm2.bias", Block + "ln_2.bias"),
            (Layer + "mlp.fc1.weight", Block + "mlp.c_fc.weight"),
            (Layer + "mlp.fc1.bias", Block + "mlp.c_fc.bias"),
            (Layer + "mlp.fc2.weight", Block + "mlp.c_proj.weight"),
            (Layer + "mlp.fc2.bias", Block + "mlp.c_proj.bias"),
        ],
        Composites =
        [
            Stacked(Block + "attn.in_proj_weight", "weight"),
            Stacked(Block + "attn.in_proj_bias", "bias"),
        ],
    };

    private static CompositeRule Stacked(string model, string suffix) => new(
        model,
        [Layer + "self_attn.q_proj." + suffix, Layer + "self_attn.k_proj." + suffix, Layer + "self_attn.v_proj." + suffix],
        parts => cat([parts[0], parts[1], parts[2]]),
        shapes => shapes.All(s => s.Length >= 1 && s.Length == shapes[0].Length && s.Skip(1).SequenceEqual(shapes[0].Skip(1)))
            ? [shapes.Sum(s => s[0]), .. shapes[0].Skip(1)]
            : [-1]);
}
