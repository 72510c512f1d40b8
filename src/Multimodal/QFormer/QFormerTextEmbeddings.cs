using Multimodal.Common;

namespace Multimodal.QFormer;

/// <summary>transformers v4.45.1 <c>Blip2TextEmbeddings</c> (modeling_blip_2.py): word plus absolute
/// position embeddings of the text, placed after the query tokens when given. No LayerNorm here: the
/// Q-Former's <c>layernorm</c> normalises the whole input. Positions are derived, not a stored buffer.</summary>
internal sealed class QFormerTextEmbeddings : nn.Module
{
    [ComponentName(Name = "word_embeddings")] private readonly EmbeddingTable _wordEmbeddings;
    [ComponentName(Name = "position_embeddings")] private readonly EmbeddingTable _positionEmbeddings;

    public QFormerTextEmbeddings(QFormerConfig config, Device? device = null, ScalarType? dtype = null) : base(nameof(QFormerTextEmbeddings))
    {
        _wordEmbeddings = new EmbeddingTable(config.VocabSize, config.HiddenSize, device: device, dtype: dtype);
        _positionEmbeddings = new EmbeddingTable(config.MaxPositionEmbeddings, config.HiddenSize, device: device, dtype: dtype);
        RegisterComponents();
    }

    /// <param name="inputIds">(B, T) text ids.</param>
    /// <param name="queryEmbeds">(B, Q, D) query tokens to put in front, or null.</param>
    /// <returns>(B, [Q +] T, D).</returns>
    public Tensor Forward(Tensor inputIds, Tensor? queryEmbeds = null)
    {
        using var scope = NewDisposeScope();
        long t = inputIds.size(1);
        if (t > _positionEmbeddings.weight!.size(0))
            throw new ArgumentException($"The text has {t} tokens; the Q-Former has {_positionEmbeddings.weight.size(0)} positions.", nameof(inputIds));
        var text = _wordEmbeddings.forward(inputIds).Plus(_positionEmbeddings.weight.narrow(0, 0, t));
        var result = queryEmbeds is null ? text : cat([queryEmbeds, text.to(queryEmbeds.dtype)], 1);
        return result.MoveToOuterDisposeScope();
    }
}
