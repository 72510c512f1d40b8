namespace Multimodal.Language;

/// <summary>A module that wraps a language model's decoder layer (Flamingo's <c>FlamingoLayer</c>), so the
/// published keys read <c>…{i}.decoder_layer.*</c>; the language model still runs the inner layer.</summary>
internal interface IWrappedDecoderLayer
{
    /// <summary>The wrapped decoder layer.</summary>
    nn.Module DecoderLayer { get; }
}

/// <summary>Called before decoder layer <c>i</c> with its input hidden states (B, T, D); returns the states
/// the layer receives. Flamingo inserts its gated cross-attention here.</summary>
internal delegate Tensor BeforeDecoderLayer(int layer, Tensor hidden);

/// <summary>Decoder-only language models that Flamingo can wrap.</summary>
internal interface IFlamingoHost : ICausalLanguageModel
{
    /// <summary>Width of the hidden states.</summary>
    int HiddenSize { get; }

    /// <summary>Decoder layers.</summary>
    int LayerCount { get; }

    /// <summary><see cref="ICausalLanguageModel.Forward"/> with a hook before every decoder layer.</summary>
    Tensor Forward(Tensor inputsEmbeds, Tensor attentionMask, Generation.KvCache? cache, BeforeDecoderLayer? beforeLayer);
}
