using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Multimodal.Common;

/// <summary>One float32 row times a float32 weight on the CPU — a float32 model's decode-step <c>nn.Linear</c> — computed
/// here instead of by libtorch's matrix–vector product, which streamed the weights at 19–31 GB/s where a plain loop on the
/// same threads streams 35–56 (issue measurements; README's Performance section has this machine's). Each output is a
/// float32 dot product plus the bias, as libtorch's, up to the order of the sums.</summary>
/// <remarks>Each thread reads its band of weight rows as one stream, one row at a time, or four side by side for wide
/// inputs (<see cref="RowByRowWidth"/>); the bands are split over libtorch's OpenMP team, as for
/// <see cref="Bf16MatrixVector"/>. Operands are checked here, at the entry; the switch is
/// <see cref="CpuKernelOptions.Float32SingleRow"/>.</remarks>
internal static unsafe class Float32SingleRow
{
    /// <summary>Whether the kernel runs: this machine supports it and <see cref="CpuKernelOptions.Current"/> allows it.</summary>
    internal static bool Available => CpuKernelOptions.Supported && CpuKernelOptions.Current is { Enabled: true, Float32SingleRow: true };

    [ThreadStatic] private static long _calls;

    /// <summary>Products this thread has computed here.</summary>
    internal static long Calls => _calls;

    /// <summary>Whether <see cref="TryLinear"/> takes this product: one float32 row, contiguous CPU operands, autograd off.</summary>
    public static bool Applies(Tensor input, Tensor weight, Tensor? bias) =>
        Available && LinearExtensions.KernelOperands(input, weight, bias, ScalarType.Float32, out long rows) && rows == 1;

    /// <summary>The product when <see cref="Applies"/> holds, checked once; false, and nothing computed, otherwise.</summary>
    public static bool TryLinear(Tensor input, Tensor weight, Tensor? bias, [System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out Tensor? result)
    {
        result = Applies(input, weight, bias) ? Compute(input, weight, bias) : null;
        if (result is not null) _calls++;
        return result is not null;
    }

    private static Tensor Compute(Tensor input, Tensor weight, Tensor? bias)
    {
        long n = weight.size(0), k = weight.size(1);
        var result = LinearExtensions.KernelOutput(input, n, ScalarType.Float32);
        fixed (byte* w = weight.bytes)
        fixed (byte* x = input.bytes)
        fixed (byte* o = result.bytes)
        fixed (byte* b = bias is null ? default : bias.bytes)
        {
            var job = new Job((float*)w, (float*)x, (float*)b, (float*)o, n, k);
            OpenMpTeam.Run(&RunPart, &job);
        }
        OpenMpTeam.ThrowIfFailed(nameof(Float32SingleRow));
        return result;
    }

    private readonly struct Job(float* weight, float* x, float* bias, float* output, long n, long k)
    {
        public readonly float* Weight = weight, X = x, Bias = bias, Output = output;
        public readonly long N = n, K = k;
    }

    [UnmanagedCallersOnly]
    private static void RunPart(void* data) => OpenMpTeam.Guard(&Part, data);

    /// <summary>Widest input read one weight row at a time: up to it the input (16 KB) stays in L1 while a row streams past;
    /// wider, re-reading it for every row doubled the traffic from L2, and four rows share each load of it instead
    /// (K = 10240, bfloat16: 1.35× a plain read of the same bytes one row at a time, 1.13× four at a time).</summary>
    internal const long RowByRowWidth = 4096;

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Part(void* data)
    {
        var job = (Job*)data;
        var (start, end) = OpenMpTeam.Band(job->N, 4);
        if (job->K <= RowByRowWidth) RowByRow(job, start, end);
        else FourRows(job, start, end);
    }

    // One row at a time, 64 inputs per step in four accumulators, the weights 4 KB ahead brought into L2 (PrefetchAhead):
    // each thread reads one sequential stream.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void RowByRow(Job* job, long start, long end)
    {
        long k = job->K, vectorK = k & ~63L;
        float* x = job->X;
        for (long r = start; r < end; r++)
        {
            float* w = job->Weight + r * k;
            var a0 = Vector512<float>.Zero; var a1 = a0; var a2 = a0; var a3 = a0;
            long i = 0;
            for (; i < vectorK; i += 64)
            {
                PrefetchAhead((byte*)(w + i));
                a0 = Avx512F.FusedMultiplyAdd(Vector512.Load(w + i), Vector512.Load(x + i), a0);
                a1 = Avx512F.FusedMultiplyAdd(Vector512.Load(w + i + 16), Vector512.Load(x + i + 16), a1);
                a2 = Avx512F.FusedMultiplyAdd(Vector512.Load(w + i + 32), Vector512.Load(x + i + 32), a2);
                a3 = Avx512F.FusedMultiplyAdd(Vector512.Load(w + i + 48), Vector512.Load(x + i + 48), a3);
            }
            for (; i + 16 <= k; i += 16) a0 = Avx512F.FusedMultiplyAdd(Vector512.Load(w + i), Vector512.Load(x + i), a0);
            Store(job, r, w, i, Vector512.Sum(a0 + a1 + (a2 + a3)));
        }
    }

    // Four weight rows side by side share each load of the input, while the next four are brought into L2 (PrefetchNext).
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void FourRows(Job* job, long start, long end)
    {
        long k = job->K, vectorK = k & ~15L;
        float* x = job->X;
        long r = start;
        for (; r + 4 <= end; r += 4)
        {
            float* w0 = job->Weight + r * k, w1 = w0 + k, w2 = w1 + k, w3 = w2 + k;
            byte* next = (byte*)(w0 + 4 * k);
            var a0 = Vector512<float>.Zero; var a1 = a0; var a2 = a0; var a3 = a0;
            for (long i = 0; i < vectorK; i += 16)
            {
                PrefetchNext(next);
                next += 256;
                var xv = Vector512.Load(x + i);
                a0 = Avx512F.FusedMultiplyAdd(Vector512.Load(w0 + i), xv, a0);
                a1 = Avx512F.FusedMultiplyAdd(Vector512.Load(w1 + i), xv, a1);
                a2 = Avx512F.FusedMultiplyAdd(Vector512.Load(w2 + i), xv, a2);
                a3 = Avx512F.FusedMultiplyAdd(Vector512.Load(w3 + i), xv, a3);
            }
            Store(job, r, w0, vectorK, Vector512.Sum(a0));
            Store(job, r + 1, w1, vectorK, Vector512.Sum(a1));
            Store(job, r + 2, w2, vectorK, Vector512.Sum(a2));
            Store(job, r + 3, w3, vectorK, Vector512.Sum(a3));
        }
        for (; r < end; r++)
        {
            float* w = job->Weight + r * k;
            var a = Vector512<float>.Zero;
            for (long i = 0; i < vectorK; i += 16) a = Avx512F.FusedMultiplyAdd(Vector512.Load(w + i), Vector512.Load(x + i), a);
            Store(job, r, w, vectorK, Vector512.Sum(a));
        }
    }

    /// <summary>Brings the 256 bytes 4 KB past <paramref name="at"/> into L2, for a loop that reads 256 bytes per step in
    /// one sequential stream: the loads then find their lines in L2 however fast the memory answers. Measured on this
    /// machine, each run over 512 MB of float32 layers against a plain read of the same bytes just before it (medians of 7,
    /// three runs, the forms alternating): while the machine read ~35 GB/s, four rows side by side with the next four
    /// prefetched (the previous form), one row at a time with this, and one row at a time without it all took 1.02–1.14×
    /// the read; while it read ~57–64 GB/s, 1.53–1.68×, 1.16–1.38× and 1.50–1.68×. Four rows side by side without any
    /// prefetch: 1.23–1.33× at ~35 GB/s on K = 1024, ~2× at ~60.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void PrefetchAhead(byte* at)
    {
        Sse.Prefetch1(at + 4096);
        Sse.Prefetch1(at + 4160);
        Sse.Prefetch1(at + 4224);
        Sse.Prefetch1(at + 4288);
    }

    /// <summary>For four rows read side by side, 64 bytes of each per step: brings the next four (contiguous after them)
    /// into L2 at the same pace, 256 bytes per step, so the next block is there when the loop reaches it (the hardware
    /// prefetchers otherwise restart at every block of rows). Float32, K = 4096, each run over 512 MB of layers against a
    /// plain read of the same bytes just before it: 1.12× the read without, 1.05–1.07× with; K = 1024: 1.23–1.33× and
    /// 1.02–1.10×.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void PrefetchNext(byte* next)
    {
        Sse.Prefetch1(next);
        Sse.Prefetch1(next + 64);
        Sse.Prefetch1(next + 128);
        Sse.Prefetch1(next + 192);
    }

    // The scalar tail past the last full vector, then the bias.
    private static void Store(Job* job, long r, float* w, long vectorK, float sum)
    {
        for (long i = vectorK; i < job->K; i++) sum += w[i] * job->X[i];
        job->Output[r] = job->Bias is null ? sum : sum + job->Bias[r];
    }
}
