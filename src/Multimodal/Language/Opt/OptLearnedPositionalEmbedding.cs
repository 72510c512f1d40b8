using Multimodal.Common;

namespace Multimodal.Language.Opt;

/// <summary>transformers v4.45.1 <c>OPTLearnedPositionalEmbedding</c> (modeling_opt.py). Positions come
/// from the attention mask, <c>cumsum(mask)·mask − 1</c>, so left padding does not shift real tokens;
/// the table has two extra rows because fairseq's OPT reserved ids 0 and 1 (pads land on row 1).</summary>
internal sealed class OptLearnedPositionalEmbedding : nn.Module
{
    private const int Offset = 2;
    [ComponentName(Name = "weight")] private readonly Parameter _weight;

    public OptLearnedPositionalEmbedding(int positions, int dim, Device? device = null, ScalarType? dtype = null)
        : base(nameof(OptLearnedPositionalEmbedding))
    {
        _weight = new Parameter(zeros(positions + Offset, dim, dtype: dtype, device: device), requires_grad: false);
        RegisterComponents();
    }

    /// <param name="attentionMask">(B, Tpast + Tnew).</param>
    /// <param name="pastLength">Tpast.</param>
    /// <returns>(B, Tnew, D).</returns>
    public Tensor Forward(Tensor attentionMask, long pastLength)
    {
        using var scope = NewDisposeScope();
        var mask = attentionMask.to(ScalarType.Int64);
        var positions = mask.cumsum(1).mul(mask).Minus(1).narrow(1, pastLength, mask.size(1) - pastLength).Plus(Offset);
        if (positions.max().item<long>() >= _weight.size(0))
            throw new ArgumentException(
                $"The sequence needs position {positions.max().item<long>() - Offset}, but this OPT has max_position_embeddings = {_weight.size(0) - Offset}.");
        long b = positions.size(0), t = positions.size(1);
        return _weight.index_select(0, positions.flatten()).view(b, t, -1).MoveToOuterDisposeScope();
    }
}
