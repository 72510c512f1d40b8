using Multimodal.Common;

namespace Multimodal.Tests.Packaging;

/// <summary>When TorchSharp's glue library cannot load, the error we raise names the loader's real reason
/// (here: the unpatched package copy on a system whose libstdc++ lacks GLIBCXX_3.4.32).</summary>
public sealed class NativeLoadTests
{
    [SkippableFact]
    public void The_loader_error_of_an_unpatched_copy_names_the_missing_symbol_version()
    {
        Skip.IfNot(OperatingSystem.IsLinux(), "the weak-version patch is for Linux");
        string packages = Environment.GetEnvironmentVariable("NUGET_PACKAGES")
                          ?? Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".nuget", "packages");
        string unpatched = Path.Combine(packages, "torchsharp", "0.107.0", "runtimes", "linux-x64", "native", "libLibTorchSharp.so");
        Skip.IfNot(File.Exists(unpatched), $"{unpatched} is not in the package cache");
        // As when TorchSharp itself fails: libtorch is already in the process (TorchSharp loads it first), so the
        // unpatched glue library's own failure is what dlopen reports, not its missing neighbour libtorch.so.
        TorchRuntime.EnsureLoaded();
        var reason = TorchRuntime.DescribeLoadFailure(unpatched);
        bool systemHasIt = SystemLibStdCxxHas("GLIBCXX_3.4.32");
        if (systemHasIt)
        {
            Assert.Null(reason);
            return;
        }
        Assert.NotNull(reason);
        Assert.Contains("GLIBCXX_3.4.32", reason);

        // The output copy the build patched loads (it is the one this test process runs on).
        string patched = Path.Combine(AppContext.BaseDirectory, "runtimes", "linux-x64", "native", "libLibTorchSharp.so");
        Assert.Null(TorchRuntime.DescribeLoadFailure(patched));
        Assert.Null(TorchRuntime.DescribeLoadFailure(Path.Combine(AppContext.BaseDirectory, "no-such-library.so")));
    }

    internal static bool SystemLibStdCxxHas(string version)
    {
        foreach (var dir in new[] { "/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib" })
        {
            string lib = Path.Combine(dir, "libstdc++.so.6");
            if (File.Exists(lib)) return System.Text.Encoding.ASCII.GetString(File.ReadAllBytes(lib)).Contains(version + "\0");
        }
        return false;
    }
}
