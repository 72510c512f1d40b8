using System.Runtime.InteropServices;

namespace Multimodal.Server;

/// <summary>Keeps the managed heap near what requests in flight hold. Once requests have allocated 64 MB since the last
/// collection, a full blocking collection frees their garbage (at most one each 200 ms); when no request holds a
/// reservation, it also compacts, decommits the free regions and trims the allocator's arenas, so RSS returns to its
/// plateau instead of keeping the peak of the last large request.</summary>
internal sealed class MemoryReturn(RequestBudget budget)
{
    private const long Threshold = 64L << 20;
    private long _allocatedAtLast = GC.GetTotalAllocatedBytes();
    private long _allocatedAtCompact = GC.GetTotalAllocatedBytes();
    private int _scheduled;

    /// <summary>Called as each request ends.</summary>
    public void RequestEnded()
    {
        long allocated = GC.GetTotalAllocatedBytes();
        bool due = allocated - Interlocked.Read(ref _allocatedAtLast) >= Threshold;
        bool compactDue = allocated - Interlocked.Read(ref _allocatedAtCompact) >= Threshold / 4;
        if (!due && !compactDue) return;
        if (Interlocked.Exchange(ref _scheduled, 1) == 1) return;
        _ = Task.Run(async () =>
        {
            try
            {
                if (due)
                {
                    Interlocked.Exchange(ref _allocatedAtLast, GC.GetTotalAllocatedBytes());
                    GC.Collect(GC.MaxGeneration, GCCollectionMode.Forced, blocking: true, compacting: false);
                }
                // Compact only once the server has been idle for half a second: never in the middle of a burst.
                await Task.Delay(500);
                if (budget.InUse == 0)
                {
                    Interlocked.Exchange(ref _allocatedAtCompact, GC.GetTotalAllocatedBytes());
                    GC.Collect(GC.MaxGeneration, GCCollectionMode.Aggressive, blocking: true, compacting: true);
                    NativeAllocator.Trim();
                }
            }
            finally
            {
                Interlocked.Exchange(ref _scheduled, 0);
            }
        });
    }
}

/// <summary>glibc's allocator, tuned for a server whose requests come and go in large blocks.</summary>
internal static partial class NativeAllocator
{
    private const int MmapThreshold = -3;   // M_MMAP_THRESHOLD

    /// <summary>Blocks of 4 MiB and more (request bodies, pixel buffers, activations) get their own mappings, returned
    /// to the system when freed. glibc otherwise raises this threshold to the largest block freed (up to 32 MiB), and
    /// such blocks then stay in its arenas after the request.</summary>
    public static void Configure()
    {
        if (!OperatingSystem.IsLinux()) return;
        try { _ = MallOpt(MmapThreshold, 4 << 20); }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException) { }   // not glibc
    }

    /// <summary>Returns the arenas' free pages to the system (<c>malloc_trim</c>).</summary>
    public static void Trim()
    {
        if (!OperatingSystem.IsLinux()) return;
        try { _ = MallocTrim(0); }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException) { }
    }

    [LibraryImport("libc", EntryPoint = "mallopt")]
    private static partial int MallOpt(int parameter, int value);

    [LibraryImport("libc", EntryPoint = "malloc_trim")]
    private static partial int MallocTrim(nuint pad);
}
