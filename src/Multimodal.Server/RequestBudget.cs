namespace Multimodal.Server;

/// <summary>The memory requests may hold at once. Each request reserves its worst case before it allocates it — its
/// body when it arrives, its images' decode cost (from their headers) and a generation's working set once parsed — and
/// gives it back when it ends; a reservation that does not fit beside those in flight is refused (429), one larger
/// than the whole budget can never be served (413).</summary>
public sealed class RequestBudget
{
    private readonly object _lock = new();
    private long _used;

    /// <summary>Bytes requests may hold together; long.MaxValue until the models are loaded and the budget is set.</summary>
    public long Capacity { get; private set; } = long.MaxValue;

    /// <summary>Bytes reserved by requests in flight.</summary>
    public long InUse { get { lock (_lock) return _used; } }

    /// <summary>The most ever reserved at once (a diagnostic for the load tests).</summary>
    public long Peak { get; private set; }

    /// <summary>Sets the capacity (once the models' own memory is known).</summary>
    public void SetCapacity(long bytes) => Capacity = Math.Max(bytes, 1);

    /// <summary>Reserves <paramref name="bytes"/> for what a request is about to allocate.</summary>
    /// <param name="bytes">the worst case.</param>
    /// <param name="what">what it is for, in the error ("this request's images").</param>
    /// <exception cref="OpenAiException">429 when it does not fit now; 413 when it could never fit.</exception>
    public IDisposable Reserve(long bytes, string what)
    {
        if (bytes > Capacity)
            throw new OpenAiException(413, $"{what} need {Mb(bytes)} MB, more than this server's request memory budget of {Mb(Capacity)} MB " +
                                           "(Multimodal:MemoryBudgetMB less 96 MB kept for garbage between collections).", code: "request_too_large");
        lock (_lock)
        {
            if (_used + bytes > Capacity)
                throw new OpenAiException(429, $"The server's memory budget is taken by requests in flight ({Mb(_used)} of {Mb(Capacity)} MB); retry shortly.",
                    type: "rate_limit_error", code: "memory_budget_full");
            _used += bytes;
            Peak = Math.Max(Peak, _used);
        }
        return new Lease(this, bytes);
    }

    private static long Mb(long bytes) => (bytes + (1 << 20) - 1) >> 20;

    private sealed class Lease(RequestBudget budget, long bytes) : IDisposable
    {
        private int _released;

        public void Dispose()
        {
            if (Interlocked.Exchange(ref _released, 1) == 1) return;
            lock (budget._lock) budget._used -= bytes;
        }
    }
}
