using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Multimodal.Common;

/// <summary>5–8 float32 rows times a float32 weight on the CPU — a batched decode step's <c>nn.Linear</c> —
/// computed here instead of by libtorch's <c>addmm</c>, whose small-batch GEMM reads the weights more slowly than its
/// one-row product does; this kernel reads each weight once for all rows (README's Performance section has the
/// measurements). Each output is a float32 dot product plus the bias, as libtorch's, up to the order of the sums.</summary>
/// <remarks>Used only where it was measured to win: CPU, float32 input, weight and bias, 5–8 rows (at 4 rows
/// libtorch is as fast, below that faster), contiguous data, autograd off, and
/// <see cref="CpuKernelOptions"/>. The rows of the weight are split over libtorch's OpenMP team, as for
/// <see cref="Bf16MatrixVector"/>.</remarks>
internal static unsafe class Float32FewRows
{
    private const int MinRows = 5, MaxRows = 8;

    /// <summary>Whether the kernel runs: this machine supports it and <see cref="CpuKernelOptions.Current"/> allows it.</summary>
    internal static bool Available => CpuKernelOptions.Supported && CpuKernelOptions.Current is { Enabled: true, Float32FewRows: true };

    [ThreadStatic] private static long _calls;

    /// <summary>Products this thread has computed here (tests prove the kernel path ran; per thread, so concurrent
    /// tests do not count).</summary>
    internal static long Calls => _calls;

    /// <summary>Whether <see cref="Linear"/> takes this product: otherwise the caller uses libtorch.</summary>
    public static bool Applies(Tensor input, Tensor weight, Tensor? bias) =>
        Available && LinearExtensions.KernelOperands(input, weight, bias, ScalarType.Float32, out long rows)
        && rows is >= MinRows and <= MaxRows;

    /// <summary><c>input · weightᵀ + bias</c> for 5–8 rows (<see cref="Applies"/> must hold): input (…, K),
    /// weight (N, K), bias (N) or null; the result has input's shape with K replaced by N.</summary>
    /// <exception cref="ArgumentException">operands the kernel does not take (it never reads memory it has not checked).</exception>
    public static Tensor Linear(Tensor input, Tensor weight, Tensor? bias) =>
        TryLinear(input, weight, bias, out var result) ? result : throw new ArgumentException("Float32FewRows takes 5-8 contiguous CPU float32 rows, a (N, K) weight and an (N) bias of the same kind, with autograd off.");

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
        int m = (int)(input.numel() / k);
        var result = LinearExtensions.KernelOutput(input, n, ScalarType.Float32);
        // The kernel always multiplies 8 rows (its registers hold 8 accumulators per weight row); missing rows are zeros.
        var x = Padded(MemoryMarshal.Cast<byte, float>(input.bytes), k);
        fixed (byte* w = weight.bytes)
        fixed (byte* o = result.bytes)
        fixed (float* xp = x)
        fixed (byte* b = bias is null ? default : bias.bytes)
        {
            var job = new Job((float*)w, xp, (float*)b, (float*)o, n, k, m);
            OpenMpTeam.Run(&RunPart, &job);
        }
        OpenMpTeam.ThrowIfFailed(nameof(Float32FewRows));
        return result;
    }

    [ThreadStatic] private static float[]? _rows;

    private static float[] Padded(ReadOnlySpan<float> rows, long k)
    {
        long size = MaxRows * k;
        var x = _rows is { } buffer && buffer.Length == size ? buffer : (_rows = new float[size]);
        rows.CopyTo(x);
        x.AsSpan(rows.Length).Clear();
        return x;
    }

    /// <summary>The product's pointers, for the team's threads.</summary>
    private readonly struct Job(float* weight, float* x, float* bias, float* output, long n, long k, int m)
    {
        public readonly float* Weight = weight, X = x, Bias = bias, Output = output;
        public readonly long N = n, K = k;
        public readonly int M = m;
    }

    // Each team thread computes one band of weight rows, in multiples of the 3-row block.
    [UnmanagedCallersOnly]
    private static void RunPart(void* data) => OpenMpTeam.Guard(&Part, data);

    private static void Part(void* data)
    {
        var job = (Job*)data;
        var (start, end) = OpenMpTeam.Band(job->N, 3);
        Rows(job, start, end);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Rows(Job* job, long start, long end)
    {
        long k = job->K, vectorK = k & ~15L;
        float* x0 = job->X, x1 = x0 + k, x2 = x1 + k, x3 = x2 + k, x4 = x3 + k, x5 = x4 + k, x6 = x5 + k, x7 = x6 + k;
        var sums = stackalloc float[MaxRows];
        long r = start;
        // Three weight rows against all eight input rows: 24 accumulators, 3 weight vectors and 1 input vector fit
        // the 32 AVX-512 registers, and every weight vector loaded is used eight times.
        for (; r + 3 <= end; r += 3)
        {
            float* wa = job->Weight + r * k, wb = wa + k, wc = wb + k;
            var a0 = Vector512<float>.Zero; var a1 = a0; var a2 = a0; var a3 = a0; var a4 = a0; var a5 = a0; var a6 = a0; var a7 = a0;
            var b0 = a0; var b1 = a0; var b2 = a0; var b3 = a0; var b4 = a0; var b5 = a0; var b6 = a0; var b7 = a0;
            var c0 = a0; var c1 = a0; var c2 = a0; var c3 = a0; var c4 = a0; var c5 = a0; var c6 = a0; var c7 = a0;
            for (long i = 0; i < vectorK; i += 16)
            {
                var va = Vector512.Load(wa + i); var vb = Vector512.Load(wb + i); var vc = Vector512.Load(wc + i);
                var v = Vector512.Load(x0 + i); a0 = Avx512F.FusedMultiplyAdd(va, v, a0); b0 = Avx512F.FusedMultiplyAdd(vb, v, b0); c0 = Avx512F.FusedMultiplyAdd(vc, v, c0);
                v = Vector512.Load(x1 + i); a1 = Avx512F.FusedMultiplyAdd(va, v, a1); b1 = Avx512F.FusedMultiplyAdd(vb, v, b1); c1 = Avx512F.FusedMultiplyAdd(vc, v, c1);
                v = Vector512.Load(x2 + i); a2 = Avx512F.FusedMultiplyAdd(va, v, a2); b2 = Avx512F.FusedMultiplyAdd(vb, v, b2); c2 = Avx512F.FusedMultiplyAdd(vc, v, c2);
                v = Vector512.Load(x3 + i); a3 = Avx512F.FusedMultiplyAdd(va, v, a3); b3 = Avx512F.FusedMultiplyAdd(vb, v, b3); c3 = Avx512F.FusedMultiplyAdd(vc, v, c3);
                v = Vector512.Load(x4 + i); a4 = Avx512F.FusedMultiplyAdd(va, v, a4); b4 = Avx512F.FusedMultiplyAdd(vb, v, b4); c4 = Avx512F.FusedMultiplyAdd(vc, v, c4);
                v = Vector512.Load(x5 + i); a5 = Avx512F.FusedMultiplyAdd(va, v, a5); b5 = Avx512F.FusedMultiplyAdd(vb, v, b5); c5 = Avx512F.FusedMultiplyAdd(vc, v, c5);
                v = Vector512.Load(x6 + i); a6 = Avx512F.FusedMultiplyAdd(va, v, a6); b6 = Avx512F.FusedMultiplyAdd(vb, v, b6); c6 = Avx512F.FusedMultiplyAdd(vc, v, c6);
                v = Vector512.Load(x7 + i); a7 = Avx512F.FusedMultiplyAdd(va, v, a7); b7 = Avx512F.FusedMultiplyAdd(vb, v, b7); c7 = Avx512F.FusedMultiplyAdd(vc, v, c7);
            }
            Store(job, r, sums, wa, vectorK, a0, a1, a2, a3, a4, a5, a6, a7);
            Store(job, r + 1, sums, wb, vectorK, b0, b1, b2, b3, b4, b5, b6, b7);
            Store(job, r + 2, sums, wc, vectorK, c0, c1, c2, c3, c4, c5, c6, c7);
        }
        for (; r < end; r++)
        {
            float* wr = job->Weight + r * k;
            var a0 = Vector512<float>.Zero; var a1 = a0; var a2 = a0; var a3 = a0; var a4 = a0; var a5 = a0; var a6 = a0; var a7 = a0;
            for (long i = 0; i < vectorK; i += 16)
            {
                var va = Vector512.Load(wr + i);
                a0 = Avx512F.FusedMultiplyAdd(va, Vector512.Load(x0 + i), a0); a1 = Avx512F.FusedMultiplyAdd(va, Vector512.Load(x1 + i), a1);
                a2 = Avx512F.FusedMultiplyAdd(va, Vector512.Load(x2 + i), a2); a3 = Avx512F.FusedMultiplyAdd(va, Vector512.Load(x3 + i), a3);
                a4 = Avx512F.FusedMultiplyAdd(va, Vector512.Load(x4 + i), a4); a5 = Avx512F.FusedMultiplyAdd(va, Vector512.Load(x5 + i), a5);
                a6 = Avx512F.FusedMultiplyAdd(va, Vector512.Load(x6 + i), a6); a7 = Avx512F.FusedMultiplyAdd(va, Vector512.Load(x7 + i), a7);
            }
            Store(job, r, sums, wr, vectorK, a0, a1, a2, a3, a4, a5, a6, a7);
        }
    }

    // Output row r for each input row j: the accumulator's lanes, the scalar tail past the last full vector, the bias.
    private static void Store(Job* job, long r, float* sums, float* w, long vectorK,
        Vector512<float> a0, Vector512<float> a1, Vector512<float> a2, Vector512<float> a3,
        Vector512<float> a4, Vector512<float> a5, Vector512<float> a6, Vector512<float> a7)
    {
        sums[0] = Vector512.Sum(a0); sums[1] = Vector512.Sum(a1); sums[2] = Vector512.Sum(a2); sums[3] = Vector512.Sum(a3);
        sums[4] = Vector512.Sum(a4); sums[5] = Vector512.Sum(a5); sums[6] = Vector512.Sum(a6); sums[7] = Vector512.Sum(a7);
        long k = job->K, n = job->N;
        float bias = job->Bias is null ? 0 : job->Bias[r];
        for (int j = 0; j < job->M; j++)
        {
            float s = sums[j];
            float* x = job->X + j * k;
            for (long i = vectorK; i < k; i++) s += w[i] * x[i];
            job->Output[j * n + r] = job->Bias is null ? s : s + bias;
        }
    }
}
