using Multimodal.Generation;

namespace Multimodal.Language;

/// <summary>What a caller passes down to the wrapped layers for one forward (Flamingo: the media and where the
/// text sees it). The language model carries it without looking inside.</summary>
internal interface ILayerContext;

/// <summary>A module that wraps a language model's decoder layer (Flamingo's <c>FlamingoLayer</c>), so the
/// published keys read <c>…{i}.decoder_layer.*</c>. It runs first what it adds, then the wrapped layer, which
/// the language model hands it ready to call (with its own mask, cache and positions).</summary>
internal interface IWrappedDecoderLayer
{
    /// <summary>The wrapped decoder layer.</summary>
    nn.Module DecoderLayer { get; }

    /// <summary>One step of the stack: (B, T, D) in and out.</summary>
    /// <param name="hidden">the layer's input hidden states.</param>
    /// <param name="context">the caller's per-forward context, or null for a plain language-model forward.</param>
    /// <param name="decoderLayer">runs the wrapped layer.</param>
    Tensor Forward(Tensor hidden, ILayerContext? context, Func<Tensor, Tensor> decoderLayer);
}

/// <summary>Decoder-only language models that Flamingo can wrap.</summary>
internal interface IFlamingoHost : ICausalLanguageModel
{
    /// <summary>Width of the hidden states.</summary>
    int HiddenSize { get; }

    /// <summary>Decoder layers.</summary>
    int LayerCount { get; }

    /// <summary><see cref="ICausalLanguageModel.Forward"/> with a context for the wrapped layers.</summary>
    /// <param name="inputsEmbeds">(B, Tnew, D).</param>
    /// <param name="attentionMask">(B, Tpast + Tnew).</param>
    /// <param name="cache">the self-attention cache, or null.</param>
    /// <param name="context">what the wrapped layers get, or null.</param>
    /// <param name="positionsFromMask">positions as <c>generate()</c> derives them (<c>cumsum(mask) − 1</c>) rather than
    /// as a plain <c>forward()</c> counts them (past … past + T − 1, padding included); models without positions ignore it.</param>
    Tensor Forward(Tensor inputsEmbeds, Tensor attentionMask, Generation.KvCache? cache, ILayerContext? context, bool positionsFromMask);

    // Hosts locate no media by token themselves (Flamingo's session does), so the ids are not needed.
    Tensor ICausalLanguageModel.Forward(Tensor inputsEmbeds, Tensor attentionMask, Generation.KvCache? cache, Tensor? inputIds) =>
        Forward(inputsEmbeds, attentionMask, cache, null, positionsFromMask: true);

    Generation.KvCache ICausalLanguageModel.NewCache() => new(LayerCount);

    // A host is stateless; the session that wraps it holds the media.
    bool ICausalLanguageModel.SelectRows(Tensor rows) => true;
}

/// <summary>The decoder-layer stack of a <see cref="IFlamingoHost"/>: each layer possibly wrapped at
/// construction (so its keys read <c>…{i}.decoder_layer.*</c>); a wrapped layer runs itself around the inner one.</summary>
internal static class DecoderLayers
{
    /// <summary>Adds <paramref name="count"/> layers to <paramref name="layers"/>, each passed through
    /// <paramref name="wrapLayer"/> when there is one.</summary>
    public static void Build(ModuleList<nn.Module> layers, int count, Func<int, nn.Module> create, Func<int, nn.Module, nn.Module>? wrapLayer)
    {
        for (int i = 0; i < count; i++)
        {
            var layer = create(i);
            layers.Add(wrapLayer?.Invoke(i, layer) ?? layer);
        }
    }

    /// <summary>Runs the layers in order; a wrapped layer gets <paramref name="context"/> and its inner layer as a function.</summary>
    public static Tensor Run<TLayer>(ModuleList<nn.Module> layers, Tensor hidden, ILayerContext? context, Func<TLayer, Tensor, Tensor> forward)
        where TLayer : nn.Module
    {
        foreach (var layer in layers)
            hidden = layer is IWrappedDecoderLayer wrapped
                ? wrapped.Forward(hidden, context, h => forward((TLayer)wrapped.DecoderLayer, h))
                : forward((TLayer)layer, hidden);
        return hidden;
    }
}
