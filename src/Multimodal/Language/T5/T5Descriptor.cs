using Multimodal.Common;

namespace Multimodal.Language.T5;

/// <summary>T5 / Flan-T5 (transformers <c>T5ForConditionalGeneration</c>) as a language model for the wrappers: an
/// encoder-decoder whose encoder, decoder and (when tied) head share the one <c>shared</c> table.</summary>
internal sealed class T5Descriptor : LanguageModelDescriptor<T5Config>
{
    /// <inheritdoc/>
    public override string ModelType => "t5";
    /// <inheritdoc/>
    public override string ClassName => "T5ForConditionalGeneration";
    /// <inheritdoc/>
    public override bool IsEncoderDecoder => true;
    /// <inheritdoc/>
    public override string? LayersPath => null;
    /// <inheritdoc/>
    public override string EmbeddingKey => "shared.weight";
    /// <inheritdoc/>
    public override string HeadKey => "lm_head.weight";

    /// <inheritdoc/>
    protected override void Validate(T5Config t, ConfigChecks checks, string prefix) =>
        checks.Size($"{prefix}d_model", t.DModel).Size($"{prefix}d_kv", t.DKv).Size($"{prefix}num_heads", t.NumHeads)
            .Size($"{prefix}d_ff", t.DFf)
            .Layers($"{prefix}num_layers", t.NumLayers)
            .Layers($"{prefix}num_decoder_layers", t.DecoderLayers)
            .Vocabulary($"{prefix}vocab_size", t.VocabSize)
            .Size($"{prefix}relative_attention_num_buckets", t.RelativeAttentionNumBuckets, 100_000)
            .Size($"{prefix}relative_attention_max_distance", t.RelativeAttentionMaxDistance, ConfigChecks.MaxVocabulary)
            .Require(t.FeedForwardProj is "relu" or "gated-gelu" or "gelu" or "gated-relu" or "gated-silu",
                $"{prefix}feed_forward_proj \"{t.FeedForwardProj}\" is not supported");

    /// <inheritdoc/>
    protected override int HiddenSize(T5Config config) => config.DModel;
    /// <inheritdoc/>
    protected override int VocabSize(T5Config config) => config.VocabSize;
    /// <inheritdoc/>
    protected override T5Config WithVocabSize(T5Config config, int vocab) => config with { VocabSize = vocab };
    // Generation starts from decoder_start_token_id, not a BOS.
    /// <inheritdoc/>
    protected override SpecialTokens Tokens(T5Config config) => new(null, config.EosTokenId, config.PadTokenId);
    /// <inheritdoc/>
    protected override bool TiesWordEmbeddings(T5Config config) => config.TieWordEmbeddings;

    // The encoder's and decoder's embed_tokens are the shared table (save_pretrained drops their copies).
    /// <inheritdoc/>
    public override IReadOnlyDictionary<string, string> TiedKeys(TextConfig config)
    {
        var tied = new Dictionary<string, string>(base.TiedKeys(config))
        {
            ["encoder.embed_tokens.weight"] = EmbeddingKey,
            ["decoder.embed_tokens.weight"] = EmbeddingKey,
        };
        return tied;
    }

    /// <inheritdoc/>
    protected override nn.Module Build(T5Config config, Device device, ScalarType dtype, Func<int, nn.Module, nn.Module>? wrapLayer) =>
        new T5ForConditionalGeneration(config, device, dtype);
}
