using System.Collections.Concurrent;

namespace Multimodal.Generation;

/// <summary>The one-call-at-a-time gate every façade holds: calls run in turn (each uses the model and the
/// cores fully, so N concurrent calls give exactly what N sequential calls give), and closing waits for the
/// call in progress before the model is freed — once, however often it is asked.</summary>
/// <remarks>Every call runs on the gate's own thread, not on whichever pool thread is free: libtorch's OpenMP runtime
/// and its BLAS keep a thread team and scratch buffers per calling thread, so calls spread over the pool grew a
/// server's memory with every new thread that ran one (and paid each team's start-up).</remarks>
internal sealed class CallGate
{
    private readonly SemaphoreSlim _turn = new(1, 1);
    private readonly BlockingCollection<Action> _work = new();
    private readonly object _start = new();
    private Thread? _worker;
    private int _closed;

    /// <summary>Waits for the turn.</summary>
    public Task WaitAsync(CancellationToken cancellationToken) => _turn.WaitAsync(cancellationToken);

    /// <summary>Ends a turn.</summary>
    public void Release() => _turn.Release();

    /// <summary>Runs <paramref name="work"/> on the gate's thread in its turn.</summary>
    public async Task<T> RunAsync<T>(Func<T> work, CancellationToken cancellationToken)
    {
        await _turn.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            return await OnWorker(work).ConfigureAwait(false);
        }
        finally
        {
            _turn.Release();
        }
    }

    /// <summary>Runs <paramref name="work"/> on the gate's thread; the caller holds the turn.</summary>
    public Task<T> OnWorker<T>(Func<T> work)
    {
        var result = new TaskCompletionSource<T>(TaskCreationOptions.RunContinuationsAsynchronously);
        Post(() =>
        {
            try
            {
                result.SetResult(work());
            }
            catch (OperationCanceledException e)
            {
                result.SetCanceled(e.CancellationToken);
            }
            catch (Exception e)
            {
                result.SetException(e);
            }
        });
        return result.Task;
    }

    /// <summary>Runs <paramref name="work"/> on the gate's thread; the caller holds the turn.</summary>
    public Task OnWorker(Action work) => OnWorker(() =>
    {
        work();
        return true;
    });

    private void Post(Action item)
    {
        lock (_start)
        {
            if (_worker is null)
            {
                _worker = new Thread(() =>
                {
                    foreach (var next in _work.GetConsumingEnumerable()) next();
                }) { IsBackground = true, Name = "Multimodal inference" };
                _worker.Start();
            }
        }
        _work.Add(item);
    }

    /// <summary>Waits for the call in progress, then runs <paramref name="release"/> (the first time only) and ends
    /// the gate's thread.</summary>
    public void Close(Action release)
    {
        if (Interlocked.Exchange(ref _closed, 1) == 1) return;
        _turn.Wait();
        try
        {
            release();
        }
        finally
        {
            _work.CompleteAdding();
        }
    }
}
