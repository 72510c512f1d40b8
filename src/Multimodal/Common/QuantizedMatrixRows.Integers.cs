using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Multimodal.Common;

/// <summary>The integer path of <see cref="QuantizedMatrixRows"/>: quantized weights times input rows quantized per block
/// of 32 (<see cref="QuantizedInput"/>), as llama.cpp's Q8_0 · Q4_0/Q8_0 dot products do. Each 64 bytes of 4-bit weights
/// take two u8 × s8 multiply–adds into 16-bit pairs, one into 32-bit lanes, one conversion and two float operations by the
/// lanes' input and weight scales: a quarter of the float path's work per weight, so the weights stream at the memory's
/// rate. 8-bit weights run the AVX2 form on every machine (<see cref="Int8Avx2Part"/>).</summary>
/// <remarks>The integer sums are exact (a lane holds at most 8 products of |w| ≤ 128 and |q| ≤ 127); the float part is
/// the sum over blocks of s · (the block's integer dot product), times the weight scale — the dequantized weights times the
/// dequantized input, to float32 accumulation. Inputs past the last whole 32 (8 bits) or 128 (4 bits) are summed one by
/// one in the same integers.</remarks>
internal static unsafe partial class QuantizedMatrixRows
{
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Int4IntegersPart(void* data)
    {
        var job = (Job*)data;
        var (start, end) = OpenMpTeam.Band(job->N, 4);
        if (job->M > 1) Int4Rows(job, start, end);
        else Int4OneRow(job, start, end);
    }

    // Lane ℓ of a 4-group step belongs to group ℓ / 4: the group's weight scale, spread over its 4 lanes. The lane map is a
    // constant, not a static field: the loops are compiled once, fully optimized (AggressiveOptimization), before the class
    // is known to be initialized, so a static read kept a class-initialization check and its helper call in the loop, and
    // the accumulators were spilled to the stack around it (a hot 1024×1024 product ran at 8 GB/s).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static (Vector512<byte> Low, Vector512<byte> High, Vector512<float> Scales) Int4Unpack(byte* w, float* scales)
    {
        var packed = Vector512.Load(w);
        var nibble = Vector512.Create((byte)15);
        var groupLanes = Vector512.Create(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
        var spread = Avx512F.PermuteVar16x32(Vector128.Load(scales).ToVector256Unsafe().ToVector512Unsafe(), groupLanes);
        return (packed & nibble, Vector512.ShiftRightLogical(packed.AsUInt16(), 4).AsByte() & nibble, spread);
    }

    // 4 groups of 32: the stored nibbles (q + 8) times the arranged inputs, less 8 · Σq, per 32-bit lane; then the lane's
    // input scale and the group's weight scale.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> Int4Step(Vector512<byte> low, Vector512<byte> high, Vector512<float> weightScales, QuantizedInput.Row x, long c, Vector512<float> acc)
    {
        var pairs = Avx512BW.MultiplyAddAdjacent(low, Vector512.Load(x.Arranged + c * 128)) + Avx512BW.MultiplyAddAdjacent(high, Vector512.Load(x.Arranged + c * 128 + 64));
        var lanes = Avx512BW.MultiplyAddAdjacent(pairs, Vector512<short>.One) - Vector512.Load(x.Corrections + c * 16);
        return Avx512F.FusedMultiplyAdd(Avx512F.ConvertToVector512Single(lanes) * Vector512.Load(x.GroupScales + c * 16), weightScales, acc);
    }

    // Groups from a multiple of 4 to the row's end.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float Int4Tail(byte* w, float* weightScales, QuantizedInput.Row x, long from, long groups)
    {
        float sum = 0;
        for (long g = from; g < groups; g++)
        {
            int dot = 0;
            byte* packed = w + g * 16;
            sbyte* q = x.Values + g * QuantizedInput.Block;
            for (int i = 0; i < 16; i++) dot += ((packed[i] & 15) - 8) * q[i] + ((packed[i] >> 4) - 8) * q[i + 16];
            sum += x.Scales[g] * dot * weightScales[g];
        }
        return sum;
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Int4OneRow(Job* job, long start, long end)
    {
        long groups = job->K / QuantizedLinear.Group, chunks = groups / 4, rowBytes = job->K / 2;
        var x = job->Input(0);
        for (long r = start; r < end; r++)
        {
            byte* w = job->Weight + r * rowBytes;
            float* scales = job->Scales + r * groups;
            var a0 = Vector512<float>.Zero; var a1 = a0;
            long c = 0;
            for (; c + 2 <= chunks; c += 2)
            {
                // A kilobyte ahead: the next row's first weights are fetched before the stream reaches them (at K = 10240 one
                // row streamed 19.6 and 15.3 GB/s without, 23.4 and 21.0 with, in alternating runs).
                Sse.Prefetch0(w + c * 64 + 1024);
                Sse.Prefetch0(w + c * 64 + 1088);
                var (low, high, s) = Int4Unpack(w + c * 64, scales + c * 4);
                a0 = Int4Step(low, high, s, x, c, a0);
                (low, high, s) = Int4Unpack(w + c * 64 + 64, scales + c * 4 + 4);
                a1 = Int4Step(low, high, s, x, c + 1, a1);
            }
            if (c < chunks)
            {
                var (low, high, s) = Int4Unpack(w + c * 64, scales + c * 4);
                a0 = Int4Step(low, high, s, x, c, a0);
            }
            StoreOne(job, r, Vector512.Sum(a0 + a1) + Int4Tail(w, scales, x, chunks * 4, groups), 1f);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Int4Rows(Job* job, long start, long end)
    {
        long groups = job->K / QuantizedLinear.Group, chunks = groups / 4, rowBytes = job->K / 2;
        int m = job->M;
        var acc = stackalloc Vector512<float>[MaxRows];
        var sums = stackalloc float[MaxRows];
        var rows = stackalloc QuantizedInput.Row[MaxRows];            // found once, not at every step of the inner loops
        for (int j = 0; j < m; j++) rows[j] = job->Input(j);
        for (long r = start; r < end; r++)
        {
            byte* w = job->Weight + r * rowBytes;
            float* scales = job->Scales + r * groups;
            for (int j = 0; j < m; j++) acc[j] = Vector512<float>.Zero;
            for (long c = 0; c < chunks; c++)
            {
                var (low, high, s) = Int4Unpack(w + c * 64, scales + c * 4);
                for (int j = 0; j < m; j++) acc[j] = Int4Step(low, high, s, rows[j], c, acc[j]);
            }
            for (int j = 0; j < m; j++) sums[j] = Vector512.Sum(acc[j]) + Int4Tail(w, scales, rows[j], chunks * 4, groups);
            StoreRows(job, r, sums, 1f);
        }
    }

    private static void StoreRows(Job* job, long r, float* sums, float scale)
    {
        float bias = job->Bias is null ? 0 : job->Bias[r];
        for (int j = 0; j < job->M; j++) job->Output[j * job->N + r] = sums[j] * scale + bias;
    }
}
