using System.Diagnostics;
using System.Runtime.InteropServices;
using static TorchSharp.torch;

namespace Multimodal.Benchmarks;

/// <summary>This machine's limits, measured in the same run as the figures they judge (shared machines drift).</summary>
/// <param name="ReadGBps">the decode floor's bandwidth: the better of <paramref name="TorchSumGBps"/> and
/// <paramref name="StreamGBps"/>.</param>
/// <param name="CopyGBps">bytes <c>copy_</c> reads per second (1 GiB → 1 GiB).</param>
/// <param name="Fp32Gflops">2048³ float32 matmul.</param>
/// <param name="Bf16Gflops">2048³ bfloat16 matmul.</param>
/// <param name="TorchSumGBps">bytes libtorch's <c>sum()</c> over 1 GiB of float32 reads per second.</param>
/// <param name="StreamGBps">weight bytes a plain vectorised matrix–vector loop streams per second on libtorch's OpenMP
/// team (<see cref="StreamingFloor"/>; 0 where that team is not found).</param>
internal sealed record Floors(double ReadGBps, double CopyGBps, double Fp32Gflops, double Bf16Gflops, double TorchSumGBps, double StreamGBps)
{
    public static Floors Measure()
    {
        using var scope = NewDisposeScope();
        var src = randn(256L << 20);                    // 1 GiB of float32
        var dst = empty_like(src);
        double read = Best(5, () => src.sum().item<float>()) is var t1 ? 4.0 * src.numel() / t1 / 1e9 : 0;
        double copy = Best(5, () => dst.copy_(src)) is var t2 ? 4.0 * src.numel() / t2 / 1e9 : 0;
        double Gemm(ScalarType type)
        {
            using var s = NewDisposeScope();
            var a = randn(2048, 2048).to(type);
            var b = randn(2048, 2048).to(type);
            return 2.0 * 2048 * 2048 * 2048 / Best(5, () => a.matmul(b)) / 1e9;
        }
        double stream = StreamingFloor.Measure();
        return new Floors(Math.Max(read, stream), copy, Gemm(ScalarType.Float32), Gemm(ScalarType.BFloat16), read, stream);
    }

    /// <summary>Fastest of <paramref name="repeats"/> runs after one warm-up, in seconds.</summary>
    public static double Best(int repeats, Action action)
    {
        action();
        double best = double.MaxValue;
        for (int i = 0; i < repeats; i++)
        {
            var clock = Stopwatch.StartNew();
            using (var scope = NewDisposeScope()) action();
            best = Math.Min(best, clock.Elapsed.TotalSeconds);
        }
        return best;
    }

    [DllImport("libc", SetLastError = true)]
    private static extern int posix_fadvise(int fd, long offset, long length, int advice);

    /// <summary>Asks the kernel to drop <paramref name="path"/>'s cached pages (POSIX_FADV_DONTNEED), after
    /// flushing them, so the next read comes from the disk.</summary>
    public static void DropPageCache(string path)
    {
        using var stream = new FileStream(path, FileMode.Open, FileAccess.ReadWrite);
        stream.Flush(flushToDisk: true);
        if (posix_fadvise((int)stream.SafeFileHandle.DangerousGetHandle(), 0, 0, 4) != 0)
            Console.Error.WriteLine($"posix_fadvise failed on {path}; the cold figures include cached pages");
    }

    /// <summary>Seconds to read <paramref name="files"/> sequentially in 64 MiB blocks.</summary>
    public static double RawRead(IReadOnlyList<string> files, bool cold)
    {
        if (cold) foreach (var f in files) DropPageCache(f);
        var buffer = GC.AllocateUninitializedArray<byte>(64 << 20, pinned: true);
        var clock = Stopwatch.StartNew();
        foreach (var f in files)
        {
            using var stream = new FileStream(f, FileMode.Open, FileAccess.Read, FileShare.Read, 1, FileOptions.SequentialScan);
            while (stream.Read(buffer) > 0) { }
        }
        return clock.Elapsed.TotalSeconds;
    }
}
