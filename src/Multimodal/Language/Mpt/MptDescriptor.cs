using Multimodal.Common;

namespace Multimodal.Language.Mpt;

/// <summary>MPT (transformers <c>MptForCausalLM</c>: MPT-1B/7B in OpenFlamingo-3B/9B) as a language model for the
/// wrappers; the head is tied to <c>wte</c>.</summary>
internal sealed class MptDescriptor : LanguageModelDescriptor<MptConfig>
{
    /// <inheritdoc/>
    public override string ModelType => "mpt";
    /// <inheritdoc/>
    public override string ClassName => "MptForCausalLM";
    /// <inheritdoc/>
    public override string? LayersPath => "transformer.blocks.";
    /// <inheritdoc/>
    public override string EmbeddingKey => "transformer.wte.weight";
    /// <inheritdoc/>
    public override string HeadKey => "lm_head.weight";

    /// <inheritdoc/>
    protected override void Validate(MptConfig config, ConfigChecks checks, string prefix) => config.Validate(checks, prefix);
    /// <inheritdoc/>
    protected override int HiddenSize(MptConfig config) => config.DModel;
    /// <inheritdoc/>
    protected override int VocabSize(MptConfig config) => config.VocabSize;
    /// <inheritdoc/>
    protected override MptConfig WithVocabSize(MptConfig config, int vocab) => config with { VocabSize = vocab };
    /// <inheritdoc/>
    protected override SpecialTokens Tokens(MptConfig config) => new(config.BosTokenId, config.EosTokenId, config.PadTokenId);
    /// <inheritdoc/>
    protected override bool TiesWordEmbeddings(MptConfig config) => config.TieWordEmbeddings;
    /// <inheritdoc/>
    protected override nn.Module Build(MptConfig config, Device device, ScalarType dtype, Func<int, nn.Module, nn.Module>? wrapLayer) =>
        new MptForCausalLM(config, device, dtype, wrapLayer);
}

/// <summary>mosaic_gpt, the pre-transformers MPT code OpenFlamingo-3B's MPT-1B ships with: the same model under other
/// names (<see cref="MosaicGptConfig.RenameTable"/>); its config is read as MPT's (<see cref="MosaicGptConfig.ToMpt"/>).</summary>
internal sealed class MosaicGptDescriptor : LanguageModelDescriptor<MosaicGptConfig>
{
    private static readonly MptDescriptor Mpt = new();

    /// <inheritdoc/>
    public override string ModelType => "mosaic_gpt";
    /// <inheritdoc/>
    public override string ClassName => "MosaicGPT";
    /// <inheritdoc/>
    public override string? LayersPath => Mpt.LayersPath;
    /// <inheritdoc/>
    public override string EmbeddingKey => Mpt.EmbeddingKey;
    /// <inheritdoc/>
    public override string HeadKey => Mpt.HeadKey;
    /// <inheritdoc/>
    public override IReadOnlyList<(string Published, string Model)> Renames => MosaicGptConfig.RenameTable;
    /// <inheritdoc/>
    public override TextConfig Normalize(TextConfig config) => Typed(config).ToMpt();

    /// <inheritdoc/>
    protected override void Validate(MosaicGptConfig config, ConfigChecks checks, string prefix) => Mpt.Validate(config.ToMpt(), checks, prefix);
    /// <inheritdoc/>
    protected override int HiddenSize(MosaicGptConfig config) => config.DModel;
    /// <inheritdoc/>
    protected override int VocabSize(MosaicGptConfig config) => config.VocabSize;
    /// <inheritdoc/>
    protected override MosaicGptConfig WithVocabSize(MosaicGptConfig config, int vocab) => config with { VocabSize = vocab };
    /// <inheritdoc/>
    protected override SpecialTokens Tokens(MosaicGptConfig config) => Mpt.Tokens(config.ToMpt());
    /// <inheritdoc/>
    protected override bool TiesWordEmbeddings(MosaicGptConfig config) => true;
    /// <inheritdoc/>
    protected override nn.Module Build(MosaicGptConfig config, Device device, ScalarType dtype, Func<int, nn.Module, nn.Module>? wrapLayer) =>
        new MptForCausalLM(config.ToMpt(), device, dtype, wrapLayer);
}
