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

    // Hosts locate no media by token themselves (Flamingo's hook does), so the ids are not needed.
    Tensor ICausalLanguageModel.Forward(Tensor inputsEmbeds, Tensor attentionMask, Generation.KvCache? cache, Tensor? inputIds) =>
        Forward(inputsEmbeds, attentionMask, cache, (BeforeDecoderLayer?)null);

    Generation.KvCache ICausalLanguageModel.NewCache() => new(LayerCount);
}

/// <summary>The decoder-layer stack of a <see cref="IFlamingoHost"/>: each layer possibly wrapped at
/// construction (so its keys read <c>…{i}.decoder_layer.*</c>), run with the hook before it.</summary>
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

    /// <summary>Runs the (unwrapped) layers in order, calling <paramref name="beforeLayer"/> before each.</summary>
    public static Tensor Run<TLayer>(ModuleList<nn.Module> layers, Tensor hidden, BeforeDecoderLayer? beforeLayer, Func<TLayer, Tensor, Tensor> forward)
        where TLayer : nn.Module
    {
        for (int i = 0; i < layers.Count; i++)
        {
            if (beforeLayer is not null) hidden = beforeLayer(i, hidden);
            hidden = forward((TLayer)(layers[i] is IWrappedDecoderLayer w ? w.DecoderLayer : layers[i]), hidden);
        }
        return hidden;
    }
}
