namespace Multimodal.Generation;

/// <summary>The one-call-at-a-time gate every façade holds: calls run in turn (each uses the model and the
/// cores fully, so N concurrent calls give exactly what N sequential calls give), and closing waits for the
/// call in progress before the model is freed — once, however often it is asked.</summary>
internal sealed class CallGate
{
    private readonly SemaphoreSlim _turn = new(1, 1);
    private int _closed;

    /// <summary>Waits for the turn.</summary>
    public Task WaitAsync(CancellationToken cancellationToken) => _turn.WaitAsync(cancellationToken);

    /// <summary>Ends a turn.</summary>
    public void Release() => _turn.Release();

    /// <summary>Runs <paramref name="work"/> on a worker thread in its turn.</summary>
    public async Task<T> RunAsync<T>(Func<T> work, CancellationToken cancellationToken)
    {
        await _turn.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            return await Task.Run(work, cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            _turn.Release();
        }
    }

    /// <summary>Waits for the call in progress, then runs <paramref name="release"/> (the first time only).</summary>
    public void Close(Action release)
    {
        if (Interlocked.Exchange(ref _closed, 1) == 1) return;
        _turn.Wait();
        release();
    }
}
