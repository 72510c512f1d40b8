using System.Runtime.InteropServices;
using Multimodal.Common;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace Multimodal.Tests.Modules;

/// <summary>The CPU kernels at their native boundary: each checks its own operands (a caller that skipped
/// <c>Applies</c> gets an ArgumentException, never a read of unchecked memory); an exception on a team thread comes back
/// to the caller as one exception instead of unwinding through libgomp; the team is libtorch's own libgomp.</summary>
public sealed unsafe class KernelBoundaryTests(ITestOutputHelper output)
{
    [Fact]
    public void A_kernel_called_with_operands_it_does_not_take_refuses_them()
    {
        using var scope = NewDisposeScope();
        using var inference = inference_mode();
        var strided = zeros(64, 8, ScalarType.BFloat16).t();
        Assert.Throws<ArgumentException>(() => Bf16MatrixVector.Linear(zeros(1, 64, ScalarType.BFloat16), strided, null));
        Assert.Throws<ArgumentException>(() => Bf16MatrixVector.Linear(zeros(1, 32, ScalarType.BFloat16), zeros(8, 64, ScalarType.BFloat16), null));
        Assert.Throws<ArgumentException>(() => Float32FewRows.Linear(zeros(6, 64), zeros(64, 8).t(), null));
        Assert.Throws<ArgumentException>(() => Float32FewRows.Linear(zeros(6, 64), zeros(8, 64), zeros(7)));
        Assert.Throws<ArgumentException>(() => Float32FewRows.Linear(zeros(9, 64), zeros(8, 64), null));
    }

    [SkippableFact]
    public void The_team_is_libtorchs_own_libgomp()
    {
        Skip.IfNot(OpenMpTeam.Available, "libgomp not found (not Linux, or another OpenMP runtime)");
        string path = OpenMpTeam.LibraryPath!;
        output.WriteLine(path);
        Assert.StartsWith("libgomp", Path.GetFileName(path));
        Assert.Contains(Directory.GetFiles(Path.GetDirectoryName(path)!), f => Path.GetFileName(f).StartsWith("libtorch_cpu", StringComparison.Ordinal));
    }

    [SkippableFact]
    public void An_exception_on_a_team_thread_comes_back_to_the_caller()
    {
        Skip.IfNot(OpenMpTeam.Available, "libgomp not found (not Linux, or another OpenMP runtime)");
        OpenMpTeam.Run(&ThrowingEntry, null);
        var e = Assert.Throws<InvalidOperationException>(() => OpenMpTeam.ThrowIfFailed("test kernel"));
        output.WriteLine(e.Message);
        Assert.IsType<InvalidDataException>(e.InnerException);
        OpenMpTeam.ThrowIfFailed("test kernel");                   // reported once, then clear
    }

    [UnmanagedCallersOnly]
    private static void ThrowingEntry(void* data) => OpenMpTeam.Guard(&Throws, data);

    private static void Throws(void* data) => throw new InvalidDataException("thrown on a team thread");
}
