using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Multimodal.Common;

/// <summary>The input rows of a quantized product as 8-bit integers, per block of 32 inputs — the activations of
/// llama.cpp's Q8_0 products: per block s = max|x| / 127 and q = round(x / s) (ties to even) in −127…127, so every input
/// is within s/2 of s·q. Laid out once per product for the integer kernels (<see cref="QuantizedMatrixRows"/>), which
/// share them across all weight rows.</summary>
/// <remarks>Per row, each part 64-byte aligned within the row's stride:
/// <list type="bullet">
/// <item><c>Values</c> (K bytes, q): the 8-bit kernel multiplies |w| by q with w's sign, so that u8 × s8 pairs never
/// saturate 16 bits (2 · 128 · 127 &lt; 2¹⁵);</item>
/// <item><c>Scales</c> (one float per block);</item>
/// <item>for 4 bits, per 128 inputs (4 groups): <c>Arranged</c>, the groups' first halves then their second halves (the order
/// the packed nibbles unpack in), <c>Corrections</c> (8 · Σq per lane: the stored nibbles are q + 8) and
/// <c>GroupScales</c> (the block scale of each lane).</item>
/// </list></remarks>
internal static unsafe class QuantizedInput
{
    /// <summary>Inputs per scale; equal to the 4-bit weight group, so a weight group and an input block coincide.</summary>
    public const int Block = 32;

    /// <summary>One prepared row's parts.</summary>
    internal readonly struct Row(byte* start, Layout layout)
    {
        public readonly sbyte* Values = (sbyte*)start;
        public readonly float* Scales = (float*)(start + layout.Scales);
        public readonly sbyte* Arranged = (sbyte*)(start + layout.Arranged);
        public readonly int* Corrections = (int*)(start + layout.Corrections);
        public readonly float* GroupScales = (float*)(start + layout.GroupScales);
    }

    /// <summary>Byte offsets of a row's parts for width K, and the row's stride (checked 64-bit arithmetic).</summary>
    internal readonly struct Layout
    {
        public readonly long Scales, Arranged, Corrections, GroupScales, Stride;

        public Layout(long k, bool int4)
        {
            long at = Align(k);
            Scales = at; at = checked(at + Align(checked((k + Block - 1) / Block * 4)));
            long chunks = int4 ? k / 128 : 0;
            Arranged = at; at = checked(at + chunks * 128);
            Corrections = at; at = checked(at + chunks * 64);
            GroupScales = at; at = checked(at + chunks * 64);
            Stride = at;
        }

        private static long Align(long bytes) => checked((bytes + 63) / 64 * 64);
    }

    [ThreadStatic] private static byte[]? _buffer;

    // Fully optimized from the first call, as the kernels are: at tier 0 the vector helpers are calls, and the first
    // products of a run (a prefill, a benchmark's first shape) took 60–100 µs more each.
    /// <summary>Quantizes <paramref name="m"/> float32 rows of width <paramref name="k"/> into this thread's buffer (reused
    /// from call to call, grown when a wider product needs more) and returns the first row's start; row j starts
    /// <see cref="Layout.Stride"/> · j bytes further. The buffer stays valid until this thread's next call.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static byte* Prepare(float* x, int m, long k, Layout layout, bool int4)
    {
        long bytes = checked(layout.Stride * m + 64);
        if (_buffer is null || _buffer.LongLength < bytes) _buffer = GC.AllocateUninitializedArray<byte>(checked((int)bytes), pinned: true);
        // A pinned array's address is fixed: the 64-byte aligned start inside it outlives this frame.
        byte* start = (byte*)(((nuint)Unsafe.AsPointer(ref _buffer[0]) + 63) & ~(nuint)63);
        for (int j = 0; j < m; j++)
        {
            var row = new Row(start + j * layout.Stride, layout);
            QuantizeRow(x + j * k, k, row);
            if (int4) Arrange(k, row);
        }
        return start;
    }

    // 256-bit operations only: the AVX2 kernels prepare their inputs here too.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void QuantizeRow(float* x, long k, Row row)
    {
        long blocks = (k + Block - 1) / Block;
        for (long b = 0; b < blocks; b++)
        {
            long at = b * Block;
            if (k - at >= Block)
            {
                var v0 = Vector256.Load(x + at);
                var v1 = Vector256.Load(x + at + 8);
                var v2 = Vector256.Load(x + at + 16);
                var v3 = Vector256.Load(x + at + 24);
                float max = MaxAbs(Vector256.Max(Vector256.Max(Vector256.Abs(v0), Vector256.Abs(v1)), Vector256.Max(Vector256.Abs(v2), Vector256.Abs(v3))));
                var inv = Vector256.Create(Inverse(max));
                row.Scales[b] = max / 127f;
                var q = Vector256.Narrow(Vector256.Narrow(Round(v0 * inv), Round(v1 * inv)), Vector256.Narrow(Round(v2 * inv), Round(v3 * inv)));
                q.Store(row.Values + at);
            }
            else
            {
                float max = 0;
                for (long i = at; i < k; i++) max = MathF.Max(max, MathF.Abs(x[i]));
                float inv = Inverse(max);
                row.Scales[b] = max / 127f;
                for (long i = at; i < k; i++) row.Values[i] = (sbyte)Math.Clamp((int)MathF.Round(x[i] * inv), -127, 127);
            }
        }
    }

    // Groups 4c…4c+3's first halves, then their second halves; 8 · Σq and the block scale per 32-bit lane (lanes 0–7 from
    // the first 32 bytes of each half, 8–15 from the second).
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Arrange(long k, Row row)
    {
        var eights = Vector256.Create((byte)8);
        for (long c = 0; c < k / 128; c++)
        {
            sbyte* source = row.Values + c * 128, target = row.Arranged + c * 128;
            for (int g = 0; g < 4; g++)
            {
                Vector128.Load(source + g * 32).Store(target + g * 16);
                Vector128.Load(source + g * 32 + 16).Store(target + 64 + g * 16);
            }
            for (int h = 0; h < 2; h++)
            {
                var sums = Avx2.MultiplyAddAdjacent(eights, Vector256.Load(target + h * 32)) + Avx2.MultiplyAddAdjacent(eights, Vector256.Load(target + 64 + h * 32));
                Avx2.MultiplyAddAdjacent(sums, Vector256<short>.One).Store(row.Corrections + c * 16 + h * 8);
                float* s = row.Scales + c * 4 + h * 2;
                Vector256.Create(Vector128.Create(s[0]), Vector128.Create(s[1])).Store(row.GroupScales + c * 16 + h * 8);
            }
        }
    }

    // A zero block keeps q = 0 (and s = 0) rather than 0 · ∞.
    private static float Inverse(float max) => max == 0 ? 0 : 127f / max;

    private static float MaxAbs(Vector256<float> m)
    {
        var q = Vector128.Max(m.GetLower(), m.GetUpper());
        return MathF.Max(MathF.Max(q[0], q[1]), MathF.Max(q[2], q[3]));
    }

    // Rounded to nearest (ties to even: the processor's default mode), clamped to ±127 (a NaN converts to int.MinValue).
    private static Vector256<int> Round(Vector256<float> scaled) =>
        Vector256.Min(Vector256.Max(Avx.ConvertToVector256Int32(scaled), Vector256.Create(-127)), Vector256.Create(127));
}
