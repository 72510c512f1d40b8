using Multimodal.Common;

namespace Multimodal.Language;

/// <summary>Rotary position embedding as transformers v4.45.1 <c>GPTNeoXRotaryEmbedding</c> computes it:
/// inv_freq = base^(−2i/ndims) in float32, cos/sin of cat(freqs, freqs), pairs (x[i], x[i + ndims/2])
/// (<c>rotate_half</c>, not GPT-J's interleaving). Built from the positions on the fly; no buffer. Shared by GPT-NeoX and LLaMA (one rotation,
/// transformers copies it between them).</summary>
internal static class Rotary
{
    /// <returns>cos and sin, (1, 1, T, ndims) in <paramref name="dtype"/>, for positions start … start + T − 1.</returns>
    public static (Tensor Cos, Tensor Sin) Tables(long start, long length, int ndims, double theta, ScalarType dtype, Device device)
    {
        using var scope = NewDisposeScope();
        var (cos, sin) = TablesAt(Scalars.Arange(start, start + length, ScalarType.Int64, device).unsqueeze(0), ndims, theta, dtype);
        return (cos.MoveToOuterDisposeScope(), sin.MoveToOuterDisposeScope());
    }

    /// <returns>cos and sin, (B, 1, T, ndims), for per-row positions (B, T).</returns>
    public static (Tensor Cos, Tensor Sin) TablesAt(Tensor positions, int ndims, double theta, ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        var freqs = positions.to(ScalarType.Float32).unsqueeze(-1) * InverseFrequencies(ndims, theta, positions.device);   // (B, T, ndims/2)
        var emb = cat([freqs, freqs], -1).unsqueeze(1);                                                                        // (B, 1, T, ndims)
        return (emb.cos().to(dtype).MoveToOuterDisposeScope(), emb.sin().to(dtype).MoveToOuterDisposeScope());
    }

    // inv_freq is upstream's constant buffer: computed once per (width, base, device), not at every decode step.
    private static readonly System.Collections.Concurrent.ConcurrentDictionary<(int, double, DeviceType, int), Tensor> InverseFrequencyTables = new();

    private static Tensor InverseFrequencies(int ndims, double theta, Device device) =>
        InverseFrequencyTables.GetOrAdd((ndims, theta, device.type, device.index), _ =>
        {
            using var scope = NewDisposeScope();
            var invFreq = pow(theta, Scalars.Arange(0, ndims, ScalarType.Int64, device, step: 2).to(ScalarType.Float32).Over(ndims)).reciprocal(); // (ndims/2)
            return invFreq.DetachFromDisposeScope();
        });

    /// <summary>(B, Tnew) positions as <c>prepare_inputs_for_generation</c> derives them: <c>cumsum(mask) − 1</c>, padding at 1,
    /// for the <paramref name="fresh"/> positions after <paramref name="past"/> cached ones.</summary>
    public static Tensor MaskPositions(Tensor attentionMask, long past, long fresh)
    {
        using var scope = NewDisposeScope();
        var m = attentionMask.to(ScalarType.Int64);
        return m.cumsum(1).Minus(1).FillWhere(m.EqualTo(0), 1L).narrow(1, past, fresh).MoveToOuterDisposeScope();
    }

    /// <summary>Rotates the first ndims dimensions of (B, H, T, d); the rest pass through.</summary>
    public static Tensor Apply(Tensor x, Tensor cos, Tensor sin)
    {
        using var scope = NewDisposeScope();
        long ndims = cos.size(-1), d = x.size(-1);
        var rot = x.narrow(-1, 0, ndims);
        var half = ndims / 2;
        var rotated = cat([rot.narrow(-1, half, half).neg(), rot.narrow(-1, 0, half)], -1);  // rotate_half
        var result = rot.mul(cos).Plus(rotated.mul(sin));
        if (ndims < d) result = cat([result, x.narrow(-1, ndims, d - ndims)], -1);
        return result.MoveToOuterDisposeScope();
    }
}
