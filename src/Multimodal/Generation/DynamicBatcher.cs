using System.Diagnostics.Metrics;
using System.Threading.Channels;
using Multimodal.Common;

namespace Multimodal.Generation;

/// <summary>How concurrent single-image calls are grouped into one batched generation.</summary>
/// <param name="MaxBatchSize">rows per generation at most.</param>
/// <param name="MaxWait">how long the first waiting call waits for others to join it.</param>
public sealed record BatchingOptions(int MaxBatchSize = 8, TimeSpan MaxWait = default)
{
    /// <summary>The wait, 10 ms when none is given.</summary>
    public TimeSpan Wait => MaxWait == default ? TimeSpan.FromMilliseconds(10) : MaxWait;

    internal void Validate()
    {
        if (MaxBatchSize < 1) throw new ArgumentOutOfRangeException(nameof(MaxBatchSize), MaxBatchSize, "BatchingOptions.MaxBatchSize must be at least 1.");
        if (Wait < TimeSpan.Zero || Wait > TimeSpan.FromSeconds(10))
            throw new ArgumentOutOfRangeException(nameof(MaxWait), MaxWait, "BatchingOptions.MaxWait must be between 0 and 10 s.");
    }
}

/// <summary>One batch handed to <see cref="DynamicBatcher{TItem, TResult}"/>'s runner.</summary>
/// <param name="Items">the calls, one row each.</param>
/// <param name="RowCancel">each call's own token: a cancelled one should end its row.</param>
/// <param name="CompleteRow">answers one call before the batch ends (a row that finished early).</param>
/// <param name="Cancel">cancelled when every call is.</param>
internal sealed record BatchRun<TItem, TResult>(IReadOnlyList<TItem> Items, IReadOnlyList<CancellationToken> RowCancel,
    Action<int, TResult> CompleteRow, CancellationToken Cancel);

/// <summary>Dynamic batching: calls that arrive within <see cref="BatchingOptions.MaxWait"/> of the first waiting
/// one and share its key (the generation options) run as one batch of up to <see cref="BatchingOptions.MaxBatchSize"/>
/// rows; a call with other options waits for the next batch. Each row gets what it would get alone (the batch is
/// left-padded), so batching changes throughput, not results.</summary>
/// <remarks>A call cancelled before its batch starts is dropped from it; one cancelled while its batch runs
/// returns at once and its row's token is cancelled, so the generation ends that row at its next step (greedy search
/// then drops it from the running batch); the batch itself stops when every row in it is cancelled. A row that ends
/// early is answered at once through <see cref="BatchRun{TItem, TResult}.CompleteRow"/>.</remarks>
internal sealed class DynamicBatcher<TItem, TResult> : IDisposable
{
    private static readonly Histogram<int> BatchSize = Telemetry.Meter.CreateHistogram<int>(
        "multimodal.batch.size", "{row}", "Rows per batched generation.");

    private sealed record Pending(TItem Item, object Key, TaskCompletionSource<TResult> Result, CancellationToken Token);

    private readonly Channel<Pending> _queue = Channel.CreateUnbounded<Pending>(new UnboundedChannelOptions { SingleReader = true });
    private readonly BatchingOptions _options;
    private readonly Func<TItem, object> _key;
    private readonly Func<BatchRun<TItem, TResult>, Task<IReadOnlyList<TResult>>> _run;
    private readonly Func<TItem, bool> _canRunAgain;
    private readonly Task _loop;
    private int _largest;

    /// <param name="options">batch size and wait.</param>
    /// <param name="key">calls with equal keys may share a batch.</param>
    /// <param name="run">runs a batch; returns every call's result (calls it already answered through
    /// <see cref="BatchRun{TItem, TResult}.CompleteRow"/> keep their first answer).</param>
    /// <param name="canRunAgain">whether a call of a failed batch may be run again alone (false for one that has already
    /// handed out part of its result, like a stream); null: every call may.</param>
    public DynamicBatcher(BatchingOptions options, Func<TItem, object> key,
        Func<BatchRun<TItem, TResult>, Task<IReadOnlyList<TResult>>> run,
        Func<TItem, bool>? canRunAgain = null)
    {
        options.Validate();
        (_options, _key, _run, _canRunAgain) = (options, key, run, canRunAgain ?? (_ => true));
        _loop = Task.Run(LoopAsync);
    }

    /// <summary>The most rows one batch has had so far.</summary>
    public int LargestBatch => Volatile.Read(ref _largest);

    /// <summary>Queues one call; completes with its row's result.</summary>
    public Task<TResult> RunAsync(TItem item, CancellationToken cancellationToken)
    {
        var result = new TaskCompletionSource<TResult>(TaskCreationOptions.RunContinuationsAsynchronously);
        if (!_queue.Writer.TryWrite(new Pending(item, _key(item), result, cancellationToken)))
            throw new ObjectDisposedException(nameof(DynamicBatcher<TItem, TResult>));
        if (cancellationToken.CanBeCanceled)
            cancellationToken.Register(() => result.TrySetCanceled(cancellationToken));
        return result.Task;
    }

    private async Task LoopAsync()
    {
        var deferred = new List<Pending>();
        var reader = _queue.Reader;
        while (true)
        {
            if (deferred.Count == 0 && !await reader.WaitToReadAsync().ConfigureAwait(false)) break;
            var batch = new List<Pending>();
            if (deferred.Count > 0) { batch.Add(deferred[0]); deferred.RemoveAt(0); }
            else if (reader.TryRead(out var first)) batch.Add(first);
            else continue;
            var key = batch[0].Key;
            batch.AddRange(deferred.Where(p => Equals(p.Key, key)).Take(_options.MaxBatchSize - 1));
            deferred.RemoveAll(batch.Contains);
            var deadline = DateTime.UtcNow + _options.Wait;
            while (batch.Count < _options.MaxBatchSize)
            {
                if (reader.TryRead(out var next))
                {
                    if (Equals(next.Key, key)) batch.Add(next);
                    else deferred.Add(next);
                    continue;
                }
                var remaining = deadline - DateTime.UtcNow;
                if (remaining <= TimeSpan.Zero) break;
                using var timeout = new CancellationTokenSource(remaining);
                try
                {
                    if (!await reader.WaitToReadAsync(timeout.Token).ConfigureAwait(false)) break;
                }
                catch (OperationCanceledException) { break; }
            }
            batch.RemoveAll(p => p.Result.Task.IsCompleted);         // cancelled while waiting
            if (batch.Count == 0) continue;
            await RunBatchAsync(batch).ConfigureAwait(false);
        }
        foreach (var p in deferred) p.Result.TrySetException(new ObjectDisposedException(nameof(DynamicBatcher<TItem, TResult>)));
    }

    private async Task RunBatchAsync(List<Pending> batch)
    {
        int largest;
        BatchSize.Record(batch.Count);
        while ((largest = Volatile.Read(ref _largest)) < batch.Count && Interlocked.CompareExchange(ref _largest, batch.Count, largest) != largest) { }
        using var all = new CancellationTokenSource();
        var registrations = batch.Select(p => p.Token.Register(() =>
        {
            if (batch.All(q => q.Token.IsCancellationRequested)) all.Cancel();
        })).ToList();
        try
        {
            var results = await _run(new BatchRun<TItem, TResult>(batch.Select(p => p.Item).ToList(), batch.Select(p => p.Token).ToList(),
                (row, result) => batch[row].Result.TrySetResult(result), all.Token)).ConfigureAwait(false);
            for (int i = 0; i < batch.Count; i++) batch[i].Result.TrySetResult(results[i]);
        }
        catch (Exception e)
        {
            // One bad row (an option the model refuses) fails the batch; run the rows alone so only it fails.
            if (batch.Count > 1 && e is not OperationCanceledException)
                foreach (var p in batch)
                    if (_canRunAgain(p.Item)) await RunBatchAsync([p]).ConfigureAwait(false);
                    else p.Result.TrySetException(e);
            else
                foreach (var p in batch)
                    if (e is OperationCanceledException) p.Result.TrySetCanceled();
                    else p.Result.TrySetException(e);
        }
        finally
        {
            foreach (var r in registrations) r.Dispose();
        }
    }

    /// <summary>Stops taking calls and waits for the batches already queued.</summary>
    public void Dispose()
    {
        _queue.Writer.TryComplete();
        _loop.Wait();
    }
}
