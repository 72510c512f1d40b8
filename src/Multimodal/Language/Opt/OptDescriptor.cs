using Multimodal.Common;

namespace Multimodal.Language.Opt;

/// <summary>OPT (transformers <c>OPTForCausalLM</c>) as a language model for the wrappers: learned positions bound how
/// many tokens a prompt leaves room for, and the head is tied in every published OPT.</summary>
internal sealed class OptDescriptor : LanguageModelDescriptor<OptConfig>
{
    /// <inheritdoc/>
    public override string ModelType => "opt";
    /// <inheritdoc/>
    public override string ClassName => "OPTForCausalLM";
    /// <inheritdoc/>
    public override string? LayersPath => null;
    /// <inheritdoc/>
    public override string EmbeddingKey => "model.decoder.embed_tokens.weight";
    /// <inheritdoc/>
    public override string HeadKey => "lm_head.weight";

    // OPTConfig.__init__ stores word_embed_proj_dim = hidden_size when it is not given.
    /// <inheritdoc/>
    public override TextConfig Normalize(TextConfig config) => Typed(config) is var o ? o with { WordEmbedProjDim = o.EmbedDim } : config;

    /// <inheritdoc/>
    protected override void Validate(OptConfig opt, ConfigChecks checks, string prefix) =>
        checks.Heads($"{prefix}hidden_size", opt.HiddenSize, $"{prefix}num_attention_heads", opt.NumAttentionHeads)
            .Size($"{prefix}ffn_dim", opt.FfnDim)
            .Size($"{prefix}word_embed_proj_dim", opt.EmbedDim)
            .Layers($"{prefix}num_hidden_layers", opt.NumHiddenLayers)
            .Vocabulary($"{prefix}vocab_size", opt.VocabSize)
            .Vocabulary($"{prefix}max_position_embeddings", opt.MaxPositionEmbeddings);

    /// <inheritdoc/>
    protected override int HiddenSize(OptConfig config) => config.HiddenSize;
    /// <inheritdoc/>
    protected override int VocabSize(OptConfig config) => config.VocabSize;
    /// <inheritdoc/>
    protected override OptConfig WithVocabSize(OptConfig config, int vocab) => config with { VocabSize = vocab };
    /// <inheritdoc/>
    protected override SpecialTokens Tokens(OptConfig config) => new(config.BosTokenId, config.EosTokenId, config.PadTokenId);
    /// <inheritdoc/>
    protected override bool TiesWordEmbeddings(OptConfig config) => config.TieWordEmbeddings;

    // The last new token is never fed back, so it needs no position of its own.
    /// <inheritdoc/>
    public override int? NewTokenBudget(TextConfig config, int promptPositions) =>
        Math.Max(0, Typed(config).MaxPositionEmbeddings - promptPositions + 1);

    /// <inheritdoc/>
    protected override nn.Module Build(OptConfig config, Device device, ScalarType dtype, Func<int, nn.Module, nn.Module>? wrapLayer) =>
        new OptForCausalLM(config, device, dtype);
}
