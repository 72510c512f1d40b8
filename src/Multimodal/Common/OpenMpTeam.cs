using System.Diagnostics;
using System.Runtime.InteropServices;

namespace Multimodal.Common;

/// <summary>libtorch's OpenMP runtime (the libgomp its CPU build ships and has loaded), used to run our own
/// kernels on the same worker threads as libtorch's operations: <c>GOMP_parallel</c> is the entry point GCC
/// compiles <c>#pragma omp parallel</c> to.</summary>
/// <remarks>Found through <c>/proc/self/maps</c> once libtorch is loaded: the libgomp in libtorch_cpu's own folder, the
/// copy libtorch runs its team on — not whichever OpenMP runtime some other library brought in. On other systems, or
/// with a backend built against another OpenMP, <see cref="Available"/> is false and callers stay with libtorch.</remarks>
internal static unsafe class OpenMpTeam
{
    private static readonly delegate* unmanaged<delegate* unmanaged<void*, void>, void*, uint, uint, void> Parallel;
    private static readonly delegate* unmanaged<int> ThreadNum, NumThreads;

    /// <summary>Whether libtorch's libgomp was found with the three entry points.</summary>
    public static bool Available { get; }

    /// <summary>The libgomp in use (libtorch's), or null.</summary>
    internal static string? LibraryPath { get; }

    static OpenMpTeam()
    {
        try
        {
            if (!OperatingSystem.IsLinux() || Loaded() is not string path || !NativeLibrary.TryLoad(path, out var library)) return;
            if (!NativeLibrary.TryGetExport(library, "GOMP_parallel", out var parallel)
                || !NativeLibrary.TryGetExport(library, "omp_get_thread_num", out var threadNum)
                || !NativeLibrary.TryGetExport(library, "omp_get_num_threads", out var numThreads)) return;
            Parallel = (delegate* unmanaged<delegate* unmanaged<void*, void>, void*, uint, uint, void>)parallel;
            ThreadNum = (delegate* unmanaged<int>)threadNum;
            NumThreads = (delegate* unmanaged<int>)numThreads;
            LibraryPath = path;
            Available = true;
        }
        catch (IOException)
        {
        }
    }

    // libtorch's libgomp: mapped from the folder libtorch_cpu itself was mapped from (its bundled copy carries a hash in
    // its name). Any other libgomp in the process is not the team libtorch's operations run on.
    private static string? Loaded()
    {
        TorchRuntime.EnsureLoaded();
        var mapped = File.ReadLines("/proc/self/maps").Select(line => line.IndexOf('/') is int slash and >= 0 ? line[slash..] : null)
            .OfType<string>().Distinct().ToList();
        string? torch = mapped.FirstOrDefault(p => Path.GetFileName(p).StartsWith("libtorch_cpu", StringComparison.Ordinal));
        if (torch is null) return null;
        return mapped.FirstOrDefault(p => Path.GetFileName(p).StartsWith("libgomp", StringComparison.Ordinal)
                                          && Path.GetDirectoryName(p) == Path.GetDirectoryName(torch));
    }

    /// <summary>Runs <paramref name="body"/>(<paramref name="data"/>) on every thread of a team of
    /// <see cref="get_num_threads"/> threads (the caller is thread 0) and returns when all have finished.
    /// <paramref name="body"/> runs on native frames: it catches everything (<see cref="Guard"/>).
    /// <paramref name="product"/>: whether the time counts in <see cref="Ticks"/> (a product's kernel, reading weights).</summary>
    public static void Run(delegate* unmanaged<void*, void> body, void* data, bool product = true)
    {
        long start = Stopwatch.GetTimestamp();
        Parallel(body, data, (uint)get_num_threads(), 0);
        if (product) Interlocked.Add(ref _ticks, Stopwatch.GetTimestamp() - start);
    }

    private static long _ticks;

    /// <summary><see cref="Stopwatch"/> ticks spent in <see cref="Run"/> by every caller together (fork,
    /// the parts, join) for products: the time a decode step spends reading its weights in our kernels, which the
    /// benchmark sets beside the step's whole time to show what the rest (attention, norms, the generator) costs.</summary>
    internal static long Ticks => Interlocked.Read(ref _ticks);

    private static Exception? _failure;

    /// <summary>Runs a team thread's part, catching whatever it throws: an exception must not unwind through libgomp's
    /// frames (it would end the process). The first one is kept for <see cref="ThrowIfFailed"/>.</summary>
    public static void Guard(delegate*<void*, void> part, void* data)
    {
        try
        {
            part(data);
        }
        catch (Exception e)
        {
            Interlocked.CompareExchange(ref _failure, e, null);
        }
    }

    /// <summary>After <see cref="Run"/>: throws what a team thread caught, if any (kernels run one at a time per caller,
    /// and a failure of one is reported to the next caller at worst, never lost).</summary>
    public static void ThrowIfFailed(string kernel)
    {
        if (Interlocked.Exchange(ref _failure, null) is { } e)
            throw new InvalidOperationException($"{kernel} failed on a worker thread: {e.Message}", e);
    }

    /// <summary>Inside <see cref="Run"/>: this thread's contiguous share of <paramref name="n"/> rows, in bands that are
    /// multiples of <paramref name="multiple"/> (a kernel's row block), so only the last band has rows left over.</summary>
    public static (long Start, long End) Band(long n, int multiple)
    {
        int part = ThreadNum(), parts = NumThreads();
        long band = ((n + parts - 1) / parts + multiple - 1) / multiple * multiple;
        long start = Math.Min(n, part * band);
        return (start, Math.Min(n, start + band));
    }
}
