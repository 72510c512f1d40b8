using Xunit.Abstractions;
using static TorchSharp.torch;

namespace Multimodal.Tests.TestSupport;

/// <summary>Tensor comparisons that print what they measured.</summary>
public static class TensorAssert
{
    /// <summary>The parity tolerance of the project: max abs error on float tensors.</summary>
    public const double Tolerance = 1e-4;

    /// <summary>Asserts equal shapes and, for floats, max |actual − expected| ≤ <paramref name="tolerance"/>;
    /// integers must be equal. Prints the error either way and returns it.</summary>
    public static double Close(Tensor expected, Tensor actual, string name, ITestOutputHelper output, double tolerance = Tolerance)
    {
        Assert.True(expected.shape.SequenceEqual(actual.shape),
            $"{name}: shape {Format(actual.shape)}, expected {Format(expected.shape)}");
        using var scope = NewDisposeScope();
        var a = actual.cpu();
        if (!expected.is_floating_point())
        {
            bool equal = expected.eq(a.to(expected.dtype)).all().item<bool>();
            output.WriteLine($"{name,-32} exact: {(equal ? "equal" : "DIFFERENT")}");
            Assert.True(equal, $"{name}: integer tensor differs from the reference");
            return 0;
        }
        double error = expected.numel() == 0 ? 0 : (a.to(ScalarType.Float64) - expected.to(ScalarType.Float64)).abs().max().item<double>();
        output.WriteLine($"{name,-32} max abs error {error:E2} (tolerance {tolerance:E0})");
        Assert.True(error <= tolerance, $"{name}: max abs error {error:E3} > {tolerance:E0}");
        return error;
    }

    private static string Format(long[] shape) => "[" + string.Join(", ", shape) + "]";
}
