using Multimodal.Loading;

namespace Multimodal.Flamingo;

/// <summary>OpenFlamingo's composition rules as data, like the key maps: which published part supplies which
/// model keys and how their names change on the way (open_flamingo 2.0.1 <c>create_model_and_transforms</c>
/// and the published adapter <c>checkpoint.pt</c>). A reviewer diffs these tables against upstream.</summary>
internal static class OpenFlamingoComposition
{
    /// <summary>Part, published prefix, model prefix — the first match wins; a null model prefix leaves the tensor
    /// out (open_clip's text tower, saved beside the vision tower, which Flamingo never uses). A name no rule
    /// matches keeps its name, and the strict loader reports it.</summary>
    public static readonly IReadOnlyList<(string Part, string Published, string? Model)> Prefixes =
    [
        ("vision encoder", "visual.", "vision_encoder."),
        ("vision encoder", "positional_embedding", null),
        ("vision encoder", "text_projection", null),
        ("vision encoder", "logit_scale", null),
        ("vision encoder", "transformer.", null),
        ("vision encoder", "token_embedding.", null),
        ("vision encoder", "ln_final.", null),
        ("vision encoder", "attn_mask", null),
        ("language model", "", "lang_encoder."),
        ("adapter", "", ""),
    ];

    /// <summary>The keys the adapter's trained copy supersedes: OpenFlamingo resizes and trains the input embeddings (and
    /// the output head where <c>filter_state_dict_to_trainable</c> keeps it, i.e. where its name holds "embed"), and its
    /// loading order makes the adapter's win. A head the adapter lacks (LLaMA's <c>lm_head</c>) comes from the language
    /// model's folder.</summary>
    public static IEnumerable<string> AdapterWins(Language.LanguageModelDescriptor language) =>
        ["lang_encoder." + language.EmbeddingKey, "lang_encoder." + language.HeadKey];

    /// <summary>The model key of a published name from <paramref name="part"/>, or null when it is left out.</summary>
    /// <param name="part">"vision encoder", "language model" or "adapter".</param>
    /// <param name="name">the published name.</param>
    /// <param name="layersPath">the language model's layer path (its descriptor's).</param>
    /// <param name="lmRenames">the language model family's own rename table (mosaic_gpt's), applied first.</param>
    public static string? ModelKey(string part, string name, string layersPath, WeightMap lmRenames)
    {
        if (part == "language model") name = WrapLayerKey(lmRenames.ToModelKey(name), layersPath);
        foreach (var (p, published, model) in Prefixes)
            if (p == part && name.StartsWith(published, StringComparison.Ordinal))
                return model is null ? null : model + name[published.Length..];
        return name;
    }

    /// <summary>The part that publishes a model key and its name there (the inverse of <see cref="ModelKey"/>): the
    /// perceiver and the gated cross-attention layers come from the adapter, the vision tower's keys from the vision
    /// encoder, the rest of the language model's from its folder.</summary>
    public static (string Part, string Published)? PublishedKey(string key, string layersPath, WeightMap lmRenames)
    {
        if (key.Contains(".gated_cross_attn_layer.", StringComparison.Ordinal) || !key.StartsWith("lang_encoder.", StringComparison.Ordinal)
            && !key.StartsWith("vision_encoder.", StringComparison.Ordinal))
            return ("adapter", key);
        foreach (var (part, published, model) in Prefixes)
            if (model is { Length: > 0 } && key.StartsWith(model, StringComparison.Ordinal))
            {
                string name = published + key[model.Length..];
                if (part == "language model")
                    name = lmRenames.ToPublishedKey(name.Replace(".decoder_layer.", ".", StringComparison.Ordinal));
                return (part, name);
            }
        return null;
    }

    // HF "transformer.blocks.3.attn.Wqkv.weight" → "transformer.blocks.3.decoder_layer.attn.Wqkv.weight".
    private static string WrapLayerKey(string name, string layersPath)
    {
        if (!name.StartsWith(layersPath, StringComparison.Ordinal)) return name;
        int dot = name.IndexOf('.', layersPath.Length);
        return dot < 0 ? name : name[..(dot + 1)] + "decoder_layer." + name[(dot + 1)..];
    }
}
