using Multimodal.Common;

namespace Multimodal.QFormer;

/// <summary>transformers v4.45.1 <c>Blip2QFormerMultiHeadAttention</c> (modeling_blip_2.py): BERT-style
/// attention with separate query/key/value projections. As cross-attention, keys and values come from
/// the image features (width <c>encoder_hidden_size</c>).</summary>
internal sealed class QFormerMultiHeadAttention : nn.Module
{
    [ComponentName(Name = "query")] private readonly Linear _query;
    [ComponentName(Name = "key")] private readonly Linear _key;
    [ComponentName(Name = "value")] private readonly Linear _value;
    private readonly int _heads;

    public QFormerMultiHeadAttention(QFormerConfig config, bool isCrossAttention, Device? device = null, ScalarType? dtype = null)
        : base(nameof(QFormerMultiHeadAttention))
    {
        if (config.PositionEmbeddingType != "absolute")
            throw new NotSupportedException(
                $"qformer_config.position_embedding_type = \"{config.PositionEmbeddingType}\" is not supported; published BLIP-2 checkpoints use \"absolute\".");
        int d = config.HiddenSize;
        int kvWidth = isCrossAttention ? config.EncoderHiddenSize : d;
        _heads = config.NumAttentionHeads;
        _query = Uninitialized.Linear(d, d, device: device, dtype: dtype);
        _key = Uninitialized.Linear(kvWidth, d, device: device, dtype: dtype);
        _value = Uninitialized.Linear(kvWidth, d, device: device, dtype: dtype);
        RegisterComponents();
    }

    /// <summary>(B, T, D) attending over <paramref name="keyValueSource"/> (B, S, Dkv) → (B, T, D).</summary>
    /// <param name="hidden">queries.</param>
    /// <param name="keyValueSource">the sequence attended over (<paramref name="hidden"/> itself for self-attention).</param>
    /// <param name="additiveMask">(B, 1, T or 1, S) additive mask, or null for none.</param>
    public Tensor Forward(Tensor hidden, Tensor keyValueSource, Tensor? additiveMask)
    {
        using var scope = NewDisposeScope();
        var q = Attention.SplitHeads(_query.forward(hidden), _heads);            // (B, H, T, d)
        var k = Attention.SplitHeads(_key.forward(keyValueSource), _heads);      // (B, H, S, d)
        var v = Attention.SplitHeads(_value.forward(keyValueSource), _heads);    // (B, H, S, d)
        var context = Attention.ScaledDotProduct(q, k, v, additiveMask);
        return Attention.MergeHeads(context).MoveToOuterDisposeScope();
    }
}
