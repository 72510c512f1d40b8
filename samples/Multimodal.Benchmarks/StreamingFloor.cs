using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using Multimodal.Common;

namespace Multimodal.Benchmarks;

/// <summary>The simple code that sets a decode step's floor: a matrix–vector product over float32 weights in
/// nn.Linear's (N, K) layout, one vectorised dot product per weight row, four rows side by side, the rows split over
/// libtorch's own OpenMP team (the threads the decode kernels run on). Nothing clever: what a plain loop reaches
/// streaming the same bytes on the same threads, measured in the same run as the figures it judges.</summary>
internal static unsafe class StreamingFloor
{
    /// <summary>GB/s of weights read, best of <paramref name="repeats"/>, over a (<paramref name="n"/>, <paramref name="k"/>)
    /// matrix; 0 where libtorch's OpenMP team is not available.</summary>
    public static double Measure(long n = 1L << 16, long k = 4096, int repeats = 5)
    {
        if (!OpenMpTeam.Available) return 0;
        long count = checked(n * k);
        var weight = (float*)NativeMemory.AlignedAlloc((nuint)(count * sizeof(float)), 64);
        var x = (float*)NativeMemory.AlignedAlloc((nuint)(k * sizeof(float)), 64);
        var y = (float*)NativeMemory.AlignedAlloc((nuint)(n * sizeof(float)), 64);
        try
        {
            var random = new Random(1);
            for (long i = 0; i < count; i++) weight[i] = (float)random.NextDouble() - 0.5f;
            for (long i = 0; i < k; i++) x[i] = (float)random.NextDouble();
            var job = new Job(weight, x, y, n, k);
            double seconds = Floors.Best(repeats, () =>
            {
                var local = job;
                OpenMpTeam.Run(&RunPart, &local);
                OpenMpTeam.ThrowIfFailed(nameof(StreamingFloor));
            });
            return count * sizeof(float) / seconds / 1e9;
        }
        finally
        {
            NativeMemory.AlignedFree(weight);
            NativeMemory.AlignedFree(x);
            NativeMemory.AlignedFree(y);
        }
    }

    private readonly struct Job(float* weight, float* x, float* y, long n, long k)
    {
        public readonly float* Weight = weight, X = x, Y = y;
        public readonly long N = n, K = k;
    }

    [UnmanagedCallersOnly]
    private static void RunPart(void* data) => OpenMpTeam.Guard(&Part, data);

    private static void Part(void* data)
    {
        var job = (Job*)data;
        var (start, end) = OpenMpTeam.Band(job->N, 4);
        Rows(job, start, end);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Rows(Job* job, long start, long end)
    {
        if (Vector512.IsHardwareAccelerated) Rows512(job, start, end);
        else Rows256(job, start, end);
    }

    // The widest vectors the machine has: the loop a compiler's -march=native makes of a dot product.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Rows512(Job* job, long start, long end)
    {
        long k = job->K, width = Vector512<float>.Count, vectorK = k / width * width;
        for (long r = start; r < end; r += 4)
        {
            float* w0 = job->Weight + r * k, w1 = w0 + k, w2 = w1 + k, w3 = w2 + k;
            var a0 = Vector512<float>.Zero; var a1 = a0; var a2 = a0; var a3 = a0;
            for (long i = 0; i < vectorK; i += width)
            {
                var xv = Vector512.Load(job->X + i);
                a0 += Vector512.Load(w0 + i) * xv; a1 += Vector512.Load(w1 + i) * xv;
                a2 += Vector512.Load(w2 + i) * xv; a3 += Vector512.Load(w3 + i) * xv;
            }
            job->Y[r] = Vector512.Sum(a0); job->Y[r + 1] = Vector512.Sum(a1);
            job->Y[r + 2] = Vector512.Sum(a2); job->Y[r + 3] = Vector512.Sum(a3);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Rows256(Job* job, long start, long end)
    {
        long k = job->K, width = Vector256<float>.Count, vectorK = k / width * width;
        for (long r = start; r < end; r += 4)
        {
            float* w0 = job->Weight + r * k, w1 = w0 + k, w2 = w1 + k, w3 = w2 + k;
            var a0 = Vector256<float>.Zero; var a1 = a0; var a2 = a0; var a3 = a0;
            for (long i = 0; i < vectorK; i += width)
            {
                var xv = Vector256.Load(job->X + i);
                a0 += Vector256.Load(w0 + i) * xv; a1 += Vector256.Load(w1 + i) * xv;
                a2 += Vector256.Load(w2 + i) * xv; a3 += Vector256.Load(w3 + i) * xv;
            }
            job->Y[r] = Vector256.Sum(a0); job->Y[r + 1] = Vector256.Sum(a1);
            job->Y[r + 2] = Vector256.Sum(a2); job->Y[r + 3] = Vector256.Sum(a3);
        }
    }
}
