
namespace Multimodal.QFormer;

/// <summary>transformers v4.45.1 <c>Blip2QFormerEncoder</c>: the stack of <see cref="QFormerLayer"/>s.</summary>
internal sealed class QFormerEncoder : nn.Module
{
    [ComponentName(Name = "layer")] private readonly ModuleList<QFormerLayer> _layer = new();

    public QFormerEncoder(QFormerConfig config, Device? device = null, ScalarType? dtype = null)
        : base(nameof(QFormerEncoder))
    {
        for (int i = 0; i < config.NumHiddenLayers; i++) _layer.Add(new QFormerLayer(config, i, device, dtype));
        RegisterComponents();
    }

    public Tensor Forward(Tensor hidden, Tensor? selfMask, Tensor? image, Tensor? imageMask, long queryLength)
    {
        using var scope = NewDisposeScope();
        foreach (var layer in _layer) hidden = layer.Forward(hidden, selfMask, image, imageMask, queryLength);
        return hidden.MoveToOuterDisposeScope();
    }
}

/// <summary>transformers v4.45.1 <c>Blip2QFormerModel</c> (modeling_blip_2.py), the Querying
/// Transformer of BLIP-2 (Li et al. 2023): LayerNorm over the input embeddings, then the encoder with
/// cross-attention to the frozen image features. (B, Q, D) queries + (B, S, Dv) image → (B, Q, D).</summary>
internal sealed class QFormerModel : nn.Module
{
    [ComponentName(Name = "layernorm")] private readonly LayerNorm _layernorm;
    [ComponentName(Name = "encoder")] private readonly QFormerEncoder _encoder;

    public QFormerModel(QFormerConfig config, Device? device = null, ScalarType? dtype = null)
        : base(nameof(QFormerModel))
    {
        _layernorm = nn.LayerNorm(config.HiddenSize, config.LayerNormEps, device: device, dtype: dtype);
        _encoder = new QFormerEncoder(config, device, dtype);
        RegisterComponents();
    }

    /// <param name="embeddings">(B, Q [+ T], D): query tokens, optionally followed by text embeddings.</param>
    /// <param name="image">(B, S, Dv) image features, every position attended (BLIP-2 never masks them);
    /// null for a text-only pass.</param>
    /// <param name="queryLength">Q (0 for a text-only pass).</param>
    /// <param name="selfMask">additive self-attention mask, or null when every position is real.</param>
    public Tensor Forward(Tensor embeddings, Tensor? image, long queryLength, Tensor? selfMask = null)
    {
        using var scope = NewDisposeScope();
        var hidden = _layernorm.forward(embeddings.to(_layernorm.weight!.dtype));
        return _encoder.Forward(hidden, selfMask, image, null, queryLength).MoveToOuterDisposeScope();
    }
}
