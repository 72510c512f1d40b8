
namespace Multimodal.Common;

/// <summary>Shared attention functions: head split/merge, scaled dot-product attention and the
/// additive masks transformers builds in <c>modeling_attn_mask_utils.py</c>.</summary>
/// <remarks>Masks are additive with <c>finfo(dtype).min</c> at masked positions, exactly as the eager
/// upstream paths use: a query row whose keys are all masked then gets a uniform softmax (never NaN),
/// which is what upstream computes at left-padding positions.</remarks>
internal static class Attention
{
    /// <summary>(B, T, H·d) → (B, H, T, d).</summary>
    public static Tensor SplitHeads(Tensor x, int heads)
    {
        long b = x.size(0), t = x.size(1), d = x.size(2) / heads;
        return x.view(b, t, heads, d).transpose(1, 2);
    }

    /// <summary>(B, H, T, d) → (B, T, H·d).</summary>
    public static Tensor MergeHeads(Tensor x)
    {
        long b = x.size(0), h = x.size(1), t = x.size(2), d = x.size(3);
        return x.transpose(1, 2).reshape(b, t, h * d);
    }

    /// <summary>softmax(q·kᵀ/√d + mask)·v over (B, H, T, d) tensors; <paramref name="additiveMask"/>
    /// broadcasts to (B, H, Tq, Tk) and has q's dtype. One float32 query position on the CPU (a decode step) goes to
    /// <see cref="DecodeAttention"/>, which reads k and v through their strides.</summary>
    public static Tensor ScaledDotProduct(Tensor q, Tensor k, Tensor v, Tensor? additiveMask) =>
        DecodeAttention.TryCompute(q, k, v, additiveMask, out var context)
            ? context
            : nn.functional.scaled_dot_product_attention(q, k, v, additiveMask);

    /// <summary>The most negative finite value of a floating dtype (<c>torch.finfo(dtype).min</c>).</summary>
    public static double MinValue(ScalarType dtype) => dtype switch
    {
        ScalarType.Float16 => -65504.0,
        ScalarType.BFloat16 => -3.3895313892515355e38,
        ScalarType.Float64 => double.MinValue,
        _ => float.MinValue,
    };

    /// <summary>Causal + padding mask (B, 1, Tq, Tk) for decoder self-attention.</summary>
    /// <param name="attentionMask">(B, Tk) with 1 for real tokens, covering the cached prefix and the new ones.</param>
    /// <param name="queryLength">new tokens Tq; they sit at positions Tk − Tq … Tk − 1.</param>
    /// <param name="dtype">dtype of the attention scores.</param>
    /// <param name="future">value for keys after the query: <c>finfo.min</c> (default, like the combined
    /// masks of OPT and MPT) or −∞ where upstream applies the causal mask and then adds a padding mask
    /// (GPT-NeoX), which excludes future keys even from the uniform average of an all-padding row.</param>
    public static Tensor CausalPaddingMask(Tensor attentionMask, long queryLength, ScalarType dtype, double? future = null)
    {
        using var scope = NewDisposeScope();
        long keyLength = attentionMask.size(1);
        var device = attentionMask.device;
        var queryPos = Scalars.Arange(keyLength - queryLength, keyLength, ScalarType.Int64, device).unsqueeze(1); // (Tq, 1)
        var keyPos = Scalars.Arange(0, keyLength, ScalarType.Int64, device).unsqueeze(0);                        // (1, Tk)
        var causal = keyPos.le(queryPos).unsqueeze(0).unsqueeze(0);                                // (1, 1, Tq, Tk)
        var allowed = causal.logical_and(attentionMask.to(ScalarType.Bool).unsqueeze(1).unsqueeze(1)); // (B, 1, Tq, Tk)
        var mask = AllowedToAdditive(allowed, dtype);
        if (future is double f) mask = mask.FillWhere(causal.logical_not(), f);
        return mask.MoveToOuterDisposeScope();
    }

    /// <summary>Padding-only mask (B, 1, 1, Tk) for bidirectional attention.</summary>
    public static Tensor PaddingMask(Tensor attentionMask, ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        var allowed = attentionMask.to(ScalarType.Bool).unsqueeze(1).unsqueeze(1);
        return AllowedToAdditive(allowed, dtype).MoveToOuterDisposeScope();
    }

    private static Tensor AllowedToAdditive(Tensor allowed, ScalarType dtype) =>
        zeros(Shape.Of(allowed), dtype, allowed.device).FillWhere(allowed.logical_not(), MinValue(dtype));
}
