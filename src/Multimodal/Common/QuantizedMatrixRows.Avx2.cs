using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Multimodal.Common;

/// <summary>The integer path of <see cref="QuantizedMatrixRows"/> in AVX2: 8-bit weights on every machine, 4-bit weights
/// where AVX-512 BW is missing. 256-bit steps, 32 inputs (one input block) per 8-bit step and 64 (two groups) per 4-bit
/// step, so the sums and their bounds are those of the AVX-512 form.</summary>
/// <remarks>8 bits: |w| times q with w's sign (<c>vpsignb</c>; |−128| is 128 as u8, so a loaded −128 stays exact and the
/// pairs stay under 2¹⁵), scaled by the block's input scale; 4 bits: the AVX-512 form's arrangement read in halves (a
/// 4-group chunk's first 32 bytes of each half are its groups 0–1, the next 32 its groups 2–3).</remarks>
internal static unsafe partial class QuantizedMatrixRows
{
    // Inputs from a multiple of 32 to K, block by block.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float Int8Tail(sbyte* w, QuantizedInput.Row x, long from, long k)
    {
        float sum = 0;
        for (long at = from; at < k; at += QuantizedInput.Block)
        {
            int dot = 0;
            for (long i = at, end = Math.Min(k, at + QuantizedInput.Block); i < end; i++) dot += w[i] * x.Values[i];
            sum += x.Scales[at / QuantizedInput.Block] * dot;
        }
        return sum;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> Int8Step256(Vector256<sbyte> w, QuantizedInput.Row x, long i, Vector256<float> acc)
    {
        var pairs = Avx2.MultiplyAddAdjacent(Avx2.Abs(w), Avx2.Sign(Vector256.Load(x.Values + i), w));
        var lanes = Avx2.MultiplyAddAdjacent(pairs, Vector256<short>.One);
        return Fma.MultiplyAdd(Avx.ConvertToVector256Single(lanes), Vector256.Create(x.Scales[i / QuantizedInput.Block]), acc);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Int8Avx2Part(void* data)
    {
        var job = (Job*)data;
        var (start, end) = OpenMpTeam.Band(job->N, 4);
        long k = job->K, whole = k / 32 * 32;
        int m = job->M;
        var acc = stackalloc Vector256<float>[MaxRows];
        var sums = stackalloc float[MaxRows];
        var rows = stackalloc QuantizedInput.Row[MaxRows];            // found once, not at every step of the inner loops
        for (int j = 0; j < m; j++) rows[j] = job->Input(j);
        for (long r = start; r < end; r++)
        {
            sbyte* w = (sbyte*)job->Weight + r * k;
            if (m == 1)
            {
                var x = rows[0];
                var a0 = Vector256<float>.Zero; var a1 = a0;
                long i = 0;
                for (; i + 64 <= whole; i += 64)
                {
                    a0 = Int8Step256(Vector256.Load(w + i), x, i, a0);
                    a1 = Int8Step256(Vector256.Load(w + i + 32), x, i + 32, a1);
                }
                if (i < whole) a0 = Int8Step256(Vector256.Load(w + i), x, i, a0);
                StoreOne(job, r, Vector256.Sum(a0 + a1) + Int8Tail(w, x, whole, k), job->Scales[r]);
                continue;
            }
            for (int j = 0; j < m; j++) acc[j] = Vector256<float>.Zero;
            for (long i = 0; i < whole; i += 32)
            {
                var wv = Vector256.Load(w + i);
                for (int j = 0; j < m; j++) acc[j] = Int8Step256(wv, rows[j], i, acc[j]);
            }
            for (int j = 0; j < m; j++) sums[j] = Vector256.Sum(acc[j]) + Int8Tail(w, rows[j], whole, k);
            StoreRows(job, r, sums, job->Scales[r]);
        }
    }

    // Half h of 4-group chunk c: groups 4c + 2h and 4c + 2h + 1.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static (Vector256<byte> Low, Vector256<byte> High, Vector256<float> Scales) Int4Unpack256(byte* w, float* scales)
    {
        var packed = Vector256.Load(w);
        var nibble = Vector256.Create((byte)15);
        return (packed & nibble, Vector256.ShiftRightLogical(packed.AsUInt16(), 4).AsByte() & nibble,
            Vector256.Create(Vector128.Create(scales[0]), Vector128.Create(scales[1])));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> Int4Step256(Vector256<byte> low, Vector256<byte> high, Vector256<float> weightScales, QuantizedInput.Row x, long c, int h, Vector256<float> acc)
    {
        sbyte* arranged = x.Arranged + c * 128 + h * 32;
        var pairs = Avx2.MultiplyAddAdjacent(low, Vector256.Load(arranged)) + Avx2.MultiplyAddAdjacent(high, Vector256.Load(arranged + 64));
        var lanes = Avx2.MultiplyAddAdjacent(pairs, Vector256<short>.One) - Vector256.Load(x.Corrections + c * 16 + h * 8);
        return Fma.MultiplyAdd(Avx.ConvertToVector256Single(lanes) * Vector256.Load(x.GroupScales + c * 16 + h * 8), weightScales, acc);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Int4Avx2Part(void* data)
    {
        var job = (Job*)data;
        var (start, end) = OpenMpTeam.Band(job->N, 4);
        long groups = job->K / QuantizedLinear.Group, chunks = groups / 4, rowBytes = job->K / 2;
        int m = job->M;
        var acc = stackalloc Vector256<float>[MaxRows];
        var sums = stackalloc float[MaxRows];
        var rows = stackalloc QuantizedInput.Row[MaxRows];            // found once, not at every step of the inner loops
        for (int j = 0; j < m; j++) rows[j] = job->Input(j);
        for (long r = start; r < end; r++)
        {
            byte* w = job->Weight + r * rowBytes;
            float* scales = job->Scales + r * groups;
            for (int j = 0; j < m; j++) acc[j] = Vector256<float>.Zero;
            for (long c = 0; c < chunks; c++)
                for (int h = 0; h < 2; h++)
                {
                    var (low, high, s) = Int4Unpack256(w + c * 64 + h * 32, scales + c * 4 + h * 2);
                    for (int j = 0; j < m; j++) acc[j] = Int4Step256(low, high, s, rows[j], c, h, acc[j]);
                }
            for (int j = 0; j < m; j++) sums[j] = Vector256.Sum(acc[j]) + Int4Tail(w, scales, rows[j], chunks * 4, groups);
            StoreRows(job, r, sums, 1f);
        }
    }
}
