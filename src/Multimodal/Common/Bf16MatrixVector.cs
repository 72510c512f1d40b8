using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Multimodal.Common;

/// <summary>One bfloat16 row times a bfloat16 weight on the CPU — a decode step's <c>nn.Linear</c> — computed
/// here instead of by libtorch's bf16 <c>addmm</c>, which reads the weights well below the memory's bandwidth on
/// AVX-512 machines (README's Performance section has the measurements). Each output is a float32 dot product of the
/// widened (exact) bfloat16 values rounded to bfloat16 (round to nearest even), then plus the bias and rounded again,
/// as libtorch's kernel does up to the order of the float32 sums.</summary>
/// <remarks>Used only where it was measured to win: CPU, bfloat16 input and weight, one row, a contiguous
/// weight, autograd off, and <see cref="CpuKernelOptions"/>. The rows are split over libtorch's own OpenMP team
/// (<see cref="OpenMpTeam"/>): threads of our own would compete for the cores with that team's workers, which
/// spin for milliseconds after every libtorch operation, and cut the kernel to 6 GB/s inside a decode step.</remarks>
internal static unsafe class Bf16MatrixVector
{
    /// <summary>Whether the kernel runs: this machine supports it and <see cref="CpuKernelOptions.Current"/> allows it.</summary>
    internal static bool Available => CpuKernelOptions.Supported && CpuKernelOptions.Current is { Enabled: true, Bf16SingleRow: true };

    [ThreadStatic] private static long _calls;

    /// <summary>Products this thread has computed here (tests prove the kernel path ran; per thread, so concurrent
    /// tests do not count).</summary>
    internal static long Calls => _calls;

    /// <summary>Whether <see cref="Linear"/> takes this product: otherwise the caller uses libtorch (which also
    /// names any mismatch in shape, dtype or device).</summary>
    public static bool Applies(Tensor input, Tensor weight, Tensor? bias) =>
        Available && LinearExtensions.KernelOperands(input, weight, bias, ScalarType.BFloat16, out long rows) && rows == 1;

    /// <summary><c>input · weightᵀ + bias</c> for one row (<see cref="Applies"/> must hold): input (…, K) with
    /// one row, weight (N, K), bias (N) or null; the result has input's shape with K replaced by N.</summary>
    /// <exception cref="ArgumentException">operands the kernel does not take (it never reads memory it has not checked).</exception>
    public static Tensor Linear(Tensor input, Tensor weight, Tensor? bias) =>
        TryLinear(input, weight, bias, out var result) ? result : throw new ArgumentException("Bf16MatrixVector takes one contiguous CPU bfloat16 row, a (N, K) weight and an (N) bias of the same kind, with autograd off.");

    /// <summary>The product when <see cref="Applies"/> holds, checked once (the routing's path: every decode step's
    /// linears pass here); false, and nothing computed, otherwise.</summary>
    public static bool TryLinear(Tensor input, Tensor weight, Tensor? bias, [System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out Tensor? result)
    {
        result = Applies(input, weight, bias) ? Compute(input, weight, bias) : null;
        if (result is not null) _calls++;
        return result is not null;
    }

    private static Tensor Compute(Tensor input, Tensor weight, Tensor? bias)
    {
        long n = weight.size(0), k = weight.size(1);
        var result = LinearExtensions.KernelOutput(input, n, ScalarType.BFloat16);
        var x = Widened(MemoryMarshal.Cast<byte, ushort>(input.bytes));
        fixed (byte* w = weight.bytes)
        fixed (byte* o = result.bytes)
        fixed (float* xp = x)
        fixed (byte* b = bias is null ? default : bias.bytes)
        {
            var job = new Job((ushort*)w, xp, (ushort*)b, (ushort*)o, n, k);
            OpenMpTeam.Run(&RunPart, &job);
        }
        OpenMpTeam.ThrowIfFailed(nameof(Bf16MatrixVector));
        return result;
    }

    // The input row widened to float32 once per call; the buffer is per thread because callers may run concurrently.
    [ThreadStatic] private static float[]? _row;

    private static float[] Widened(ReadOnlySpan<ushort> row)
    {
        var x = _row is { } buffer && buffer.Length >= row.Length ? buffer : (_row = new float[row.Length]);
        for (int i = 0; i < row.Length; i++) x[i] = BitConverter.Int32BitsToSingle(row[i] << 16);
        return x;
    }

    /// <summary>The product's pointers, for the team's threads.</summary>
    private readonly struct Job(ushort* weight, float* x, ushort* bias, ushort* output, long n, long k)
    {
        public readonly ushort* Weight = weight, Bias = bias, Output = output;
        public readonly float* X = x;
        public readonly long N = n, K = k;
    }

    // Each team thread computes one band of output rows, in multiples of the 4-row block.
    [UnmanagedCallersOnly]
    private static void RunPart(void* data) => OpenMpTeam.Guard(&Part, data);

    private static void Part(void* data)
    {
        var job = (Job*)data;
        var (start, end) = OpenMpTeam.Band(job->N, 4);
        if (job->K <= Float32SingleRow.RowByRowWidth) RowByRow(job->Weight, job->X, job->Bias, job->Output, job->K, start, end);
        else Rows(job->Weight, job->X, job->Bias, job->Output, job->K, start, end);
    }

    // One row at a time, 128 inputs (256 bytes) per step, the weights 4 KB ahead brought into L2
    // (Float32SingleRow.PrefetchAhead): each thread reads one sequential stream. Against a plain read of the same bytes
    // just before it, per 512 MB of layers (medians of 7, two runs): K = 1024, 1.08–1.34× where four rows side by side
    // with the next four prefetched took 1.17–1.44×; K = 2560, 1.05–1.14× against 1.12–1.16×.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void RowByRow(ushort* w, float* x, ushort* bias, ushort* o, long k, long start, long end)
    {
        long vectorK = k & ~127L;
        for (long r = start; r < end; r++)
        {
            ushort* wr = w + r * k;
            var a0 = Vector512<float>.Zero; var a1 = a0; var a2 = a0; var a3 = a0;
            long i = 0;
            for (; i < vectorK; i += 128)
            {
                Float32SingleRow.PrefetchAhead((byte*)(wr + i));
                var (l0, h0) = Widen(Vector512.Load(wr + i));
                a0 = Avx512F.FusedMultiplyAdd(l0, Vector512.Load(x + i), a0);
                a1 = Avx512F.FusedMultiplyAdd(h0, Vector512.Load(x + i + 16), a1);
                var (l1, h1) = Widen(Vector512.Load(wr + i + 32));
                a2 = Avx512F.FusedMultiplyAdd(l1, Vector512.Load(x + i + 32), a2);
                a3 = Avx512F.FusedMultiplyAdd(h1, Vector512.Load(x + i + 48), a3);
                var (l2, h2) = Widen(Vector512.Load(wr + i + 64));
                a0 = Avx512F.FusedMultiplyAdd(l2, Vector512.Load(x + i + 64), a0);
                a1 = Avx512F.FusedMultiplyAdd(h2, Vector512.Load(x + i + 80), a1);
                var (l3, h3) = Widen(Vector512.Load(wr + i + 96));
                a2 = Avx512F.FusedMultiplyAdd(l3, Vector512.Load(x + i + 96), a2);
                a3 = Avx512F.FusedMultiplyAdd(h3, Vector512.Load(x + i + 112), a3);
            }
            for (; i + 32 <= k; i += 32)
            {
                var (l, h) = Widen(Vector512.Load(wr + i));
                a0 = Avx512F.FusedMultiplyAdd(l, Vector512.Load(x + i), a0);
                a1 = Avx512F.FusedMultiplyAdd(h, Vector512.Load(x + i + 16), a1);
            }
            Finish(o, bias, r, Vector512.Sum(a0 + a1 + (a2 + a3)) + Tail(wr, x, i, k));
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Rows(ushort* w, float* x, ushort* bias, ushort* o, long k, long start, long end)
    {
        long vectorK = k & ~31L;
        long r = start;
        // Four weight rows stream side by side while the next four are prefetched (Float32SingleRow.PrefetchNext); each
        // 32-value chunk of bf16 widens to two float32 vectors, so every row keeps two accumulators.
        for (; r + 4 <= end; r += 4)
        {
            ushort* w0 = w + r * k, w1 = w0 + k, w2 = w1 + k, w3 = w2 + k;
            byte* next = (byte*)(w0 + 4 * k);
            var a0 = Vector512<float>.Zero; var a1 = a0; var a2 = a0; var a3 = a0;
            var c0 = a0; var c1 = a0; var c2 = a0; var c3 = a0;
            for (long i = 0; i < vectorK; i += 32)
            {
                Float32SingleRow.PrefetchNext(next);
                next += 256;
                var xl = Vector512.Load(x + i);
                var xh = Vector512.Load(x + i + 16);
                var (l0, h0) = Widen(Vector512.Load(w0 + i)); a0 = Avx512F.FusedMultiplyAdd(l0, xl, a0); c0 = Avx512F.FusedMultiplyAdd(h0, xh, c0);
                var (l1, h1) = Widen(Vector512.Load(w1 + i)); a1 = Avx512F.FusedMultiplyAdd(l1, xl, a1); c1 = Avx512F.FusedMultiplyAdd(h1, xh, c1);
                var (l2, h2) = Widen(Vector512.Load(w2 + i)); a2 = Avx512F.FusedMultiplyAdd(l2, xl, a2); c2 = Avx512F.FusedMultiplyAdd(h2, xh, c2);
                var (l3, h3) = Widen(Vector512.Load(w3 + i)); a3 = Avx512F.FusedMultiplyAdd(l3, xl, a3); c3 = Avx512F.FusedMultiplyAdd(h3, xh, c3);
            }
            Finish(o, bias, r, Vector512.Sum(a0 + c0) + Tail(w0, x, vectorK, k));
            Finish(o, bias, r + 1, Vector512.Sum(a1 + c1) + Tail(w1, x, vectorK, k));
            Finish(o, bias, r + 2, Vector512.Sum(a2 + c2) + Tail(w2, x, vectorK, k));
            Finish(o, bias, r + 3, Vector512.Sum(a3 + c3) + Tail(w3, x, vectorK, k));
        }
        for (; r < end; r++)
        {
            ushort* wr = w + r * k;
            var a = Vector512<float>.Zero; var c = a;
            for (long i = 0; i < vectorK; i += 32)
            {
                var (l, h) = Widen(Vector512.Load(wr + i));
                a = Avx512F.FusedMultiplyAdd(l, Vector512.Load(x + i), a);
                c = Avx512F.FusedMultiplyAdd(h, Vector512.Load(x + i + 16), c);
            }
            Finish(o, bias, r, Vector512.Sum(a + c) + Tail(w + r * k, x, vectorK, k));
        }
    }

    // bfloat16 is the top half of a float32: zero-extend each 16-bit value and shift it up.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static (Vector512<float> Low, Vector512<float> High) Widen(Vector512<ushort> v) =>
        ((Vector512.WidenLower(v) << 16).AsSingle(), (Vector512.WidenUpper(v) << 16).AsSingle());

    private static float Tail(ushort* w, float* x, long from, long k)
    {
        float s = 0;
        for (long i = from; i < k; i++) s += BitConverter.Int32BitsToSingle(w[i] << 16) * x[i];
        return s;
    }

    // As libtorch's bf16 addmm: the product is rounded to bf16, then the bias is added and the sum rounded again.
    private static void Finish(ushort* o, ushort* bias, long r, float sum)
    {
        ushort product = ToBf16(sum);
        o[r] = bias is null ? product : ToBf16(BitConverter.Int32BitsToSingle(product << 16) + BitConverter.Int32BitsToSingle(bias[r] << 16));
    }

    /// <summary>float32 → bfloat16, round to nearest even; NaN stays a (quiet) NaN.</summary>
    internal static ushort ToBf16(float value)
    {
        uint bits = BitConverter.SingleToUInt32Bits(value);
        if (float.IsNaN(value)) return (ushort)((bits >> 16) | 0x40);
        return (ushort)((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16);
    }
}
