using Multimodal.Common;

namespace Multimodal.Language.Llama;

/// <summary>LLaMA (transformers <c>LlamaForCausalLM</c>: Vicuna in InstructBLIP, LLaMA-7B in OpenFlamingo-9B-deprecated
/// and Med-Flamingo) as a language model for the wrappers.</summary>
internal sealed class LlamaDescriptor : LanguageModelDescriptor<LlamaConfig>
{
    /// <inheritdoc/>
    public override string ModelType => "llama";
    /// <inheritdoc/>
    public override string ClassName => "LlamaForCausalLM";
    /// <inheritdoc/>
    public override string? LayersPath => "model.layers.";
    /// <inheritdoc/>
    public override string EmbeddingKey => "model.embed_tokens.weight";
    /// <inheritdoc/>
    public override string HeadKey => "lm_head.weight";

    /// <inheritdoc/>
    protected override void Validate(LlamaConfig config, ConfigChecks checks, string prefix) => config.Validate(checks, prefix);
    /// <inheritdoc/>
    protected override int HiddenSize(LlamaConfig config) => config.HiddenSize;
    /// <inheritdoc/>
    protected override int VocabSize(LlamaConfig config) => config.VocabSize;
    /// <inheritdoc/>
    protected override LlamaConfig WithVocabSize(LlamaConfig config, int vocab) => config with { VocabSize = vocab };
    /// <inheritdoc/>
    protected override SpecialTokens Tokens(LlamaConfig config) => new(config.BosTokenId, config.EosTokenId, config.PadTokenId);
    /// <inheritdoc/>
    protected override bool TiesWordEmbeddings(LlamaConfig config) => config.TieWordEmbeddings;
    /// <inheritdoc/>
    protected override nn.Module Build(LlamaConfig config, Device device, ScalarType dtype, Func<int, nn.Module, nn.Module>? wrapLayer) =>
        new LlamaForCausalLM(config, device, dtype, wrapLayer);
}
