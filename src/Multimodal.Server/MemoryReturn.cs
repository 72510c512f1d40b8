using System.Runtime.InteropServices;

namespace Multimodal.Server;

/// <summary>Keeps the managed heap near what requests in flight hold. Once requests have allocated <see cref="Slack"/>
/// since the last collection, a full blocking collection frees their garbage; once no request holds a reservation, it
/// also compacts both heaps, decommits their free regions and trims the allocator's arenas, so RSS returns to its
/// plateau instead of keeping the peak of the last large request.</summary>
internal sealed class MemoryReturn(RequestBudget budget)
{
    /// <summary>Garbage requests may leave between two collections: the server's request budget is set this much below
    /// the memory it is given, since it is held beside the reservations.</summary>
    public const long Slack = 96L << 20;

    private long _allocatedAtCollect = GC.GetTotalAllocatedBytes();
    private long _allocatedAtCompact = GC.GetTotalAllocatedBytes();
    private long _lastEnded;
    private int _collecting, _waitingForIdle;

    /// <summary>Called as each request ends (its reservations are released just after).</summary>
    public void RequestEnded()
    {
        long allocated = GC.GetTotalAllocatedBytes();
        Interlocked.Exchange(ref _lastEnded, Environment.TickCount64);
        // On the request's own thread, before its reservations are released: the garbage it leaves stays covered by
        // them until it is collected.
        if (allocated - Interlocked.Read(ref _allocatedAtCollect) >= Slack && Interlocked.Exchange(ref _collecting, 1) == 0)
        {
            try
            {
                Interlocked.Exchange(ref _allocatedAtCollect, allocated);
                // Not aggressive here: compacting the large object heap this often left 140-180 MB more resident after
                // a 60 s hostile mix than the idle compaction alone.
                GC.Collect(GC.MaxGeneration, GCCollectionMode.Forced, blocking: true, compacting: false);
            }
            finally { Interlocked.Exchange(ref _collecting, 0); }
        }
        // One waiter at a time: it waits until nothing is reserved and no request ended for half a second (never in the
        // middle of a burst), compacts, and goes round again if requests allocated more meanwhile, so the last request of
        // a burst is never left uncompacted.
        if (allocated - Interlocked.Read(ref _allocatedAtCompact) >= Slack / 4 && Interlocked.Exchange(ref _waitingForIdle, 1) == 0)
            _ = Task.Run(WaitForIdleAndCompact);
    }

    private async Task WaitForIdleAndCompact()
    {
        try
        {
            do
            {
                do await Task.Delay(250);
                while (budget.InUse != 0 || Environment.TickCount64 - Interlocked.Read(ref _lastEnded) < 500);
                Interlocked.Exchange(ref _allocatedAtCompact, GC.GetTotalAllocatedBytes());
                // Aggressive: the large object heap is compacted too and its free regions decommitted, so a decoded
                // bomb's pixel arrays leave RSS (a forced compacting collection left ~110 MB of them committed). Safe
                // because large bodies no longer rent their length from the shared ArrayPool (BodyStrings): compacting
                // the arrays the pool kept made their untouched pages resident, +48 to +324 MB in six 60 s runs.
                GC.Collect(GC.MaxGeneration, GCCollectionMode.Aggressive, blocking: true, compacting: true);
                NativeAllocator.Trim();
            }
            while (GC.GetTotalAllocatedBytes() - Interlocked.Read(ref _allocatedAtCompact) >= Slack / 4);
        }
        finally { Interlocked.Exchange(ref _waitingForIdle, 0); }
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
