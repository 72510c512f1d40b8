using System.Runtime.InteropServices;

namespace Multimodal.Common;

/// <summary>TorchSharp's native library could not be loaded. The message carries the operating system's
/// own loader error (a missing library, a missing symbol version), which TorchSharp itself hides behind
/// "doesn't contain a reference to libtorch-…".</summary>
public sealed class TorchSharpLoadException : Exception
{
    /// <summary>Creates the exception.</summary>
    public TorchSharpLoadException(string message, Exception? inner) : base(message, inner) { }
}

/// <summary>Makes sure TorchSharp's native backend is loaded before the first model is built, and turns a
/// failure into one exception that names the real cause.</summary>
internal static class TorchRuntime
{
    private static readonly Lazy<Exception?> Failure = new(TryLoad, LazyThreadSafetyMode.ExecutionAndPublication);

    /// <summary>Loads the backend once; throws <see cref="TorchSharpLoadException"/> when it cannot be.</summary>
    public static void EnsureLoaded()
    {
        if (Failure.Value is { } failure) throw failure;
    }

    private static Exception? TryLoad()
    {
        try
        {
            // The first touch of torch's statics runs its type initializer, which loads the natives.
            _ = torch.CPU;
            return null;
        }
        catch (Exception e) when (e is TypeInitializationException or NotSupportedException or DllNotFoundException)
        {
            var real = NativeLibraryNames().Select(DescribeLoadFailure).FirstOrDefault(m => m is not null);
            string cause = real ?? (e.InnerException ?? e).Message;
            string hint = cause.Contains("GLIBCXX_", StringComparison.Ordinal)
                ? " This libstdc++ is older than the one TorchSharp was built against. The Multimodal.TorchSharp package marks " +
                  "that version need weak in your build and publish output; that step did not reach this copy " +
                  "(files copied by hand after the build, or a build on a machine with a newer libstdc++: set " +
                  "MultimodalMarkWeakAlways=true there)."
                : " Reference a TorchSharp backend package in the application (libtorch-cpu-linux-x64, TorchSharp-cpu, " +
                  "TorchSharp-cuda-linux, ...).";
            return new TorchSharpLoadException($"TorchSharp's native library could not be loaded: {cause}.{hint}", e);
        }
    }

    /// <summary>The loader's own error for one native library file, or null when it loads (or is absent).</summary>
    internal static string? DescribeLoadFailure(string path)
    {
        if (!File.Exists(path)) return null;
        try
        {
            var handle = NativeLibrary.Load(path);
            NativeLibrary.Free(handle);
            return null;
        }
        catch (DllNotFoundException e)
        {
            return e.Message.TrimEnd('.', ' ');
        }
        catch (BadImageFormatException e)
        {
            return $"{path}: {e.Message.TrimEnd('.', ' ')}";
        }
    }

    // Where TorchSharp looks for its glue library: beside the application, or under runtimes/<rid>/native.
    private static IEnumerable<string> NativeLibraryNames()
    {
        string file = OperatingSystem.IsWindows() ? "LibTorchSharp.dll"
            : OperatingSystem.IsMacOS() ? "libLibTorchSharp.dylib" : "libLibTorchSharp.so";
        string baseDir = AppContext.BaseDirectory;
        yield return Path.Combine(baseDir, file);
        yield return Path.Combine(baseDir, "runtimes", RuntimeInformation.RuntimeIdentifier, "native", file);
        string arch = RuntimeInformation.ProcessArchitecture.ToString().ToLowerInvariant();
        string os = OperatingSystem.IsWindows() ? "win" : OperatingSystem.IsMacOS() ? "osx" : "linux";
        yield return Path.Combine(baseDir, "runtimes", $"{os}-{arch}", "native", file);
    }
}
