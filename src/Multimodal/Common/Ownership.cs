namespace Multimodal.Common;

/// <summary>Construction that takes over a native resource (a loaded model): what fails half-way must not
/// leave the resource allocated.</summary>
internal static class Ownership
{
    /// <summary>Returns <paramref name="build"/>(<paramref name="owned"/>), which takes <paramref name="owned"/>
    /// over; if it throws, <paramref name="owned"/> is disposed and the exception goes on.</summary>
    public static TResult DisposeOnFailure<TOwned, TResult>(TOwned owned, Func<TOwned, TResult> build) where TOwned : IDisposable
    {
        try
        {
            return build(owned);
        }
        catch
        {
            owned.Dispose();
            throw;
        }
    }

    /// <summary>A disposable that runs <paramref name="undo"/> once disposed (a setting put back when a scope ends).</summary>
    public static IDisposable Undo(Action undo) => new Undoer(undo);

    private sealed class Undoer(Action undo) : IDisposable
    {
        private Action? _undo = undo;

        public void Dispose() => Interlocked.Exchange(ref _undo, null)?.Invoke();
    }
}
