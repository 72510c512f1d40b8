
namespace Multimodal.QFormer;

/// <summary>transformers v4.45.1 <c>Blip2QFormerLayer</c> (modeling_blip_2.py). Self-attention over
/// [queries; text], then, for the first <c>queryLength</c> positions only, cross-attention to the image
/// (on layers where <c>layer % cross_attention_frequency == 0</c>) and the query FFN
/// (<c>intermediate_query</c>/<c>output_query</c>); text positions use the text FFN
/// (<c>intermediate</c>/<c>output</c>, present only with <c>use_qformer_text_input</c>).</summary>
internal sealed class QFormerLayer : nn.Module
{
    [ComponentName(Name = "attention")] private readonly QFormerAttention _attention;
    [ComponentName(Name = "crossattention")] private readonly QFormerAttention? _crossAttention;
    [ComponentName(Name = "intermediate")] private readonly QFormerIntermediate? _intermediate;
    [ComponentName(Name = "output")] private readonly QFormerResidualOutput? _output;
    [ComponentName(Name = "intermediate_query")] private readonly QFormerIntermediate _intermediateQuery;
    [ComponentName(Name = "output_query")] private readonly QFormerResidualOutput _outputQuery;

    public QFormerLayer(QFormerConfig config, int layerIndex, Device? device = null, ScalarType? dtype = null)
        : base(nameof(QFormerLayer))
    {
        _attention = new QFormerAttention(config, isCrossAttention: false, device, dtype);
        if (layerIndex % config.CrossAttentionFrequency == 0)
            _crossAttention = new QFormerAttention(config, isCrossAttention: true, device, dtype);
        if (config.UseQformerTextInput)
        {
            _intermediate = new QFormerIntermediate(config, device, dtype);
            _output = new QFormerResidualOutput(config, config.IntermediateSize, device, dtype);
        }
        _intermediateQuery = new QFormerIntermediate(config, device, dtype);
        _outputQuery = new QFormerResidualOutput(config, config.IntermediateSize, device, dtype);
        RegisterComponents();
    }

    /// <param name="hidden">(B, Q + T, D): queries then text.</param>
    /// <param name="selfMask">additive (B, 1, Q+T or 1, Q+T) mask, or null.</param>
    /// <param name="image">(B, S, Dv) image features; null for a text-only pass (query length 0).</param>
    /// <param name="imageMask">additive (B, 1, 1, S) mask, or null.</param>
    /// <param name="queryLength">Q.</param>
    public Tensor Forward(Tensor hidden, Tensor? selfMask, Tensor? image, Tensor? imageMask, long queryLength)
    {
        using var scope = NewDisposeScope();
        var attended = _attention.Forward(hidden, hidden, selfMask);
        long total = attended.size(1);
        Tensor? output = null;
        if (queryLength > 0)
        {
            var queries = attended.narrow(1, 0, queryLength);
            if (_crossAttention is not null) queries = _crossAttention.Forward(queries, image!, imageMask);
            output = _outputQuery.Forward(_intermediateQuery.forward(queries), queries);
        }
        if (total > queryLength)
        {
            if (_intermediate is null || _output is null)
                throw new InvalidOperationException("This Q-Former has no text path (qformer_config.use_qformer_text_input is false).");
            var text = attended.narrow(1, queryLength, total - queryLength);
            var textOutput = _output.Forward(_intermediate.forward(text), text);
            output = output is null ? textOutput : cat([output, textOutput], 1);
        }
        return output!.MoveToOuterDisposeScope();
    }
}
