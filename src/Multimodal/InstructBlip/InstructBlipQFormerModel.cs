// Shapes: B batch, Q query tokens, T instruction tokens, D Q-Former width, S image tokens.
using Multimodal.Common;
using Multimodal.QFormer;

namespace Multimodal.InstructBlip;

/// <summary>transformers v4.45 <c>InstructBlipQFormerEmbeddings</c>: the instruction's word plus absolute position
/// embeddings (positions from 0: the queries get none), placed after the query tokens, then one LayerNorm over all
/// of it. Unlike BLIP-2 the LayerNorm lives here, not on the Q-Former.</summary>
internal sealed class InstructBlipQFormerEmbeddings : nn.Module
{
    [ComponentName(Name = "word_embeddings")] private readonly EmbeddingTable _wordEmbeddings;
    [ComponentName(Name = "position_embeddings")] private readonly EmbeddingTable _positionEmbeddings;
    [ComponentName(Name = "layernorm")] private readonly LayerNorm _layernorm;

    public InstructBlipQFormerEmbeddings(QFormerConfig config, Device? device, ScalarType? dtype) : base(nameof(InstructBlipQFormerEmbeddings))
    {
        _wordEmbeddings = new EmbeddingTable(config.VocabSize, config.HiddenSize, device: device, dtype: dtype);
        _positionEmbeddings = new EmbeddingTable(config.MaxPositionEmbeddings, config.HiddenSize, device: device, dtype: dtype);
        _layernorm = nn.LayerNorm(config.HiddenSize, config.LayerNormEps, device: device, dtype: dtype);
        RegisterComponents();
    }

    /// <param name="instructionIds">(B, T) Q-Former token ids of the instruction.</param>
    /// <param name="queryEmbeds">(B, Q, D) query tokens.</param>
    /// <returns>(B, Q + T, D).</returns>
    public Tensor Forward(Tensor instructionIds, Tensor queryEmbeds)
    {
        using var scope = NewDisposeScope();
        long t = instructionIds.size(1);
        if (t > _positionEmbeddings.weight!.size(0))
            throw new ArgumentException($"The instruction has {t} Q-Former tokens; the Q-Former has {_positionEmbeddings.weight.size(0)} positions.", nameof(instructionIds));
        var text = _wordEmbeddings.forward(instructionIds).Plus(_positionEmbeddings.weight.narrow(0, 0, t));
        return _layernorm.forward(cat([queryEmbeds, text.to(queryEmbeds.dtype)], 1)).MoveToOuterDisposeScope();
    }
}

/// <summary>transformers v4.45 <c>InstructBlipQFormerModel</c> (Dai et al. 2023, "InstructBLIP"): the BLIP-2 Q-Former
/// whose self-attention also reads the instruction. Cross-attention to the image and the query FFN apply to the
/// query rows, the text FFN to the instruction rows.</summary>
internal sealed class InstructBlipQFormerModel : nn.Module
{
    [ComponentName(Name = "embeddings")] private readonly InstructBlipQFormerEmbeddings _embeddings;
    [ComponentName(Name = "encoder")] private readonly QFormerEncoder _encoder;

    public InstructBlipQFormerModel(QFormerConfig config, Device? device, ScalarType? dtype) : base(nameof(InstructBlipQFormerModel))
    {
        _embeddings = new InstructBlipQFormerEmbeddings(config, device, dtype);
        _encoder = new QFormerEncoder(config, device, dtype);
        RegisterComponents();
    }

    /// <param name="queryEmbeds">(B, Q, D) query tokens.</param>
    /// <param name="instructionIds">(B, T) instruction ids.</param>
    /// <param name="instructionMask">(B, T) 1 for real instruction tokens.</param>
    /// <param name="image">(B, S, Dv) image features.</param>
    /// <returns>the embeddings output and the last hidden state, both (B, Q + T, D).</returns>
    public (Tensor Embeddings, Tensor Hidden) Forward(Tensor queryEmbeds, Tensor instructionIds, Tensor instructionMask, Tensor image)
    {
        using var scope = NewDisposeScope();
        long b = queryEmbeds.size(0), q = queryEmbeds.size(1);
        var embeddings = _embeddings.Forward(instructionIds, queryEmbeds);
        // Queries are never masked; upstream's (1 − mask)·−10000 and our finfo.min both give exact zeros after softmax.
        var fullMask = cat([ones(b, q, ScalarType.Int64, instructionMask.device), instructionMask.to(ScalarType.Int64)], 1);
        var hidden = _encoder.Forward(embeddings, Attention.PaddingMask(fullMask, embeddings.dtype), image, null, q);
        return (embeddings.MoveToOuterDisposeScope(), hidden.MoveToOuterDisposeScope());
    }
}
