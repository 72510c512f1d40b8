using Multimodal.Tests.TestSupport;
using Xunit.Abstractions;

namespace Multimodal.Tests.Modules;

/// <summary>TorchSharp 0.107 lets a temporary <c>Scalar</c> be finalized while libtorch still reads it: the
/// wrapper's handle is read, the object is dead to the JIT, and a collection started by another thread during
/// the native call frees the native scalar (a tight loop of <c>a.add(b, 2.0)</c> beside a thread calling
/// <c>GC.Collect()</c> failed with "Expected false to be true" after 16,443 iterations). Such temporaries come from
/// implicit conversions (<c>x * 0.5</c>, <c>masked_fill(m, 0.0)</c>) and from TorchSharp methods that make one
/// inside (<c>a + b</c> adds with a temporary alpha of 1). The library goes through <c>Common.Scalars</c>, whose
/// Scalars are static or disposed after the call; this test reads the library's IL so nothing else creates one.</summary>
public sealed class ScalarLifetimeTests(ITestOutputHelper output)
{
    private static readonly string TorchSharpPath = typeof(TorchSharp.Scalar).Assembly.Location;
    private static readonly string LibraryPath = typeof(Multimodal.Blip2.Blip2Config).Assembly.Location;
    private static readonly string TrainingPath = typeof(Multimodal.Train.AdamW).Assembly.Location;

    // Where Scalars are made on purpose: the library's helper, and the training sample's optimizer, which makes
    // its step's Scalars with `using` so they outlive every call that reads them.
    private static readonly string[] Owners = ["Scalars", "AdamW"];

    private static bool CreatesScalar(string callee) =>
        callee.StartsWith("Scalar::op_Implicit(", StringComparison.Ordinal)
        || callee.StartsWith("ScalarExtensionMethods::ToScalar(", StringComparison.Ordinal)
        || callee.StartsWith("Tensor::ToScalar(", StringComparison.Ordinal);

    // TorchSharp methods that create a temporary Scalar in their own body or in a TorchSharp method they call.
    private static HashSet<string> TorchSharpScalarMakers()
    {
        var calls = IlCalls.Read(TorchSharpPath).Calls;
        var makers = calls.Where(c => CreatesScalar(c.Callee)).Select(c => c.Caller).ToHashSet();
        for (int added = 1; added > 0;)
        {
            added = 0;
            foreach (var c in calls)
                if (makers.Contains(c.Callee) && makers.Add(c.Caller)) added++;
        }
        return makers;
    }

    /// <summary>What in <paramref name="assemblyPath"/> creates a temporary Scalar outside <c>Scalars</c>.</summary>
    private static List<string> Offences(string assemblyPath, HashSet<string> makers) =>
        IlCalls.Read(assemblyPath).Calls
            .Where(c => makers.Contains(c.Callee) || (CreatesScalar(c.Callee) && !Owners.Contains(c.CallerType)))
            .Select(c => $"{c.Caller} calls {c.Callee}")
            .Distinct().Order(StringComparer.Ordinal).ToList();

    [Fact]
    public void The_library_creates_no_temporary_Scalar_outside_Common_Scalars()
    {
        var makers = TorchSharpScalarMakers();
        var offences = Offences(LibraryPath, makers);
        output.WriteLine($"{makers.Count} TorchSharp methods make temporary Scalars; the library calls {offences.Count} of them outside Scalars");
        foreach (var o in offences) output.WriteLine(o);
        Assert.Empty(offences);
    }

    [Fact]
    public void Training_creates_no_temporary_Scalar_so_it_needs_no_no_GC_region()
    {
        var offences = Offences(TrainingPath, TorchSharpScalarMakers());
        foreach (var o in offences) output.WriteLine(o);
        output.WriteLine($"the training sample calls {offences.Count} TorchSharp methods that make temporary Scalars");
        Assert.Empty(offences);
    }

    [Fact]
    public void The_scan_finds_the_temporaries_it_is_meant_to_find()
    {
        var makers = TorchSharpScalarMakers();
        Assert.Contains("Tensor::add(Tensor)", makers);
        Assert.Contains("Tensor::op_Addition(Tensor,Tensor)", makers);
        Assert.Contains("Tensor::op_Multiply(Tensor,Double)", makers);
        Assert.DoesNotContain("Tensor::add(Tensor,Scalar)", makers);
        var offences = Offences(typeof(ScalarLifetimeTests).Assembly.Location, makers).Where(o => o.Contains(nameof(Unsafe))).ToList();
        foreach (var o in offences) output.WriteLine(o);
        Assert.Equal(3, offences.Count);
    }

    // Never run: the scan above must flag each of these three lines.
    private static TorchSharp.torch.Tensor Unsafe(TorchSharp.torch.Tensor a, TorchSharp.torch.Tensor b) =>
        (a + b).mul(0.5).masked_fill(b, 1L);
}
