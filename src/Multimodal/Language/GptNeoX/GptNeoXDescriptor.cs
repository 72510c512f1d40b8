using Multimodal.Common;

namespace Multimodal.Language.GptNeoX;

/// <summary>GPT-NeoX (transformers <c>GPTNeoXForCausalLM</c>: Pythia, RedPajama-INCITE in OpenFlamingo-4B) as a language
/// model for the wrappers; <c>embed_out</c> is its own matrix in every published NeoX.</summary>
internal sealed class GptNeoXDescriptor : LanguageModelDescriptor<GptNeoXConfig>
{
    /// <inheritdoc/>
    public override string ModelType => "gpt_neox";
    /// <inheritdoc/>
    public override string ClassName => "GPTNeoXForCausalLM";
    /// <inheritdoc/>
    public override string? LayersPath => "gpt_neox.layers.";
    /// <inheritdoc/>
    public override string EmbeddingKey => "gpt_neox.embed_in.weight";
    /// <inheritdoc/>
    public override string HeadKey => "embed_out.weight";

    /// <inheritdoc/>
    protected override void Validate(GptNeoXConfig config, ConfigChecks checks, string prefix) => config.Validate(checks, prefix);
    /// <inheritdoc/>
    protected override int HiddenSize(GptNeoXConfig config) => config.HiddenSize;
    /// <inheritdoc/>
    protected override int VocabSize(GptNeoXConfig config) => config.VocabSize;
    /// <inheritdoc/>
    protected override GptNeoXConfig WithVocabSize(GptNeoXConfig config, int vocab) => config with { VocabSize = vocab };
    /// <inheritdoc/>
    protected override SpecialTokens Tokens(GptNeoXConfig config) => new(config.BosTokenId, config.EosTokenId, config.PadTokenId);
    /// <inheritdoc/>
    protected override bool TiesWordEmbeddings(GptNeoXConfig config) => config.TieWordEmbeddings;
    /// <inheritdoc/>
    protected override nn.Module Build(GptNeoXConfig config, Device device, ScalarType dtype, Func<int, nn.Module, nn.Module>? wrapLayer) =>
        new GptNeoXForCausalLM(config, device, dtype, wrapLayer);
}
