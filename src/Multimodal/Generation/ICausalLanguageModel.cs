namespace Multimodal.Generation;

/// <summary>What a multimodal wrapper and the generator need from a decoder-only language model:
/// token embeddings in, logits out, with an explicit KV cache. It lives with the generator that drives it, so the
/// language models depend on Generation and never the other way round.</summary>
internal interface ICausalLanguageModel
{
    /// <summary>Embedding lookup, (B, T) int64 → (B, T, E).</summary>
    Tensor EmbedTokens(Tensor inputIds);

    /// <summary>Logits for new positions.</summary>
    /// <param name="inputsEmbeds">(B, Tnew, E) embeddings of the new positions.</param>
    /// <param name="attentionMask">(B, Tpast + Tnew), 1 for real tokens, covering the cache too.</param>
    /// <param name="cache">the cache to read and extend, or null for a cache-less pass.</param>
    /// <param name="inputIds">(B, Tnew) ids of the new positions when they are tokens (models that locate
    /// media by token, like Flamingo, need them); null when the positions are embeddings only.</param>
    /// <returns>(B, Tnew, V) logits.</returns>
    Tensor Forward(Tensor inputsEmbeds, Tensor attentionMask, KvCache? cache, Tensor? inputIds = null);

    /// <summary>An empty cache sized for this model.</summary>
    KvCache NewCache();

    /// <summary>Keeps only <paramref name="rows"/> of whatever per-row state the model holds besides the cache
    /// (encoder output, media), so the generator can drop ended rows from a running batch.</summary>
    /// <param name="rows">(B') int64 indices into the current batch, ascending.</param>
    /// <returns>false when the model holds per-row state it cannot select: the generator then runs ended rows on.</returns>
    bool SelectRows(Tensor rows);
}
