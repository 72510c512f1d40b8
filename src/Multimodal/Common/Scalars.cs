namespace Multimodal.Common;

/// <summary>Tensor arithmetic with numbers, written so no TorchSharp <see cref="Scalar"/> can be finalized while
/// native code still reads it.</summary>
/// <remarks>TorchSharp 0.107 passes a Scalar to libtorch by reading its handle, after which the JIT may treat
/// the managed object as dead; a garbage collection started by any other thread during the native call can then
/// run its finalizer, which frees the native scalar under libtorch ("Unknown scalar type", "Expected false to be
/// true", or a wrong value). Every implicit conversion (<c>x * 0.5</c>, <c>masked_fill(m, 0.0)</c>,
/// <c>arange(0, n)</c>) and even <c>a + b</c> (TorchSharp adds with a temporary alpha of 1) creates such a
/// temporary. Here each Scalar is either static (always reachable) or disposed after the call returns, which
/// keeps it alive across the call. A test scans the library's IL so no other code creates one.</remarks>
internal static class Scalars
{
    private static readonly Scalar One = 1L.ToScalar();

    /// <summary>a + b.</summary>
    public static Tensor Plus(this Tensor a, Tensor b) => a.add(b, One);

    /// <summary>a + v, keeping an integer tensor integer.</summary>
    public static Tensor Plus(this Tensor a, long v) { using var s = v.ToScalar(); return a.add(s, One); }

    /// <summary>a + v.</summary>
    public static Tensor Plus(this Tensor a, double v) { using var s = v.ToScalar(); return a.add(s, One); }

    /// <summary>a − v, keeping an integer tensor integer.</summary>
    public static Tensor Minus(this Tensor a, long v) { using var s = v.ToScalar(); return a.sub(s); }

    /// <summary>a · v, keeping an integer tensor integer.</summary>
    public static Tensor Times(this Tensor a, long v) { using var s = v.ToScalar(); return a.mul(s); }

    /// <summary>a · v.</summary>
    public static Tensor Times(this Tensor a, double v) { using var s = v.ToScalar(); return a.mul(s); }

    /// <summary>a / v (true division).</summary>
    public static Tensor Over(this Tensor a, double v) { using var s = v.ToScalar(); return a.div(s); }

    /// <summary>aᵛ.</summary>
    public static Tensor Pow(this Tensor a, double v) { using var s = v.ToScalar(); return a.pow(s); }

    /// <summary><c>masked_fill(mask, v)</c>.</summary>
    public static Tensor FillWhere(this Tensor a, Tensor mask, double v) { using var s = v.ToScalar(); return a.masked_fill(mask, s); }

    /// <summary><c>masked_fill(mask, v)</c>, keeping an integer tensor integer.</summary>
    public static Tensor FillWhere(this Tensor a, Tensor mask, long v) { using var s = v.ToScalar(); return a.masked_fill(mask, s); }

    /// <summary><c>fill_(v)</c> in place.</summary>
    public static Tensor Fill_(this Tensor a, bool v) { using var s = v.ToScalar(); return a.fill_(s); }

    /// <summary><c>clamp_min(v)</c>.</summary>
    public static Tensor AtLeast(this Tensor a, long v) { using var s = v.ToScalar(); return a.clamp_min(s); }

    /// <summary><c>a.clamp(lo, hi)</c> with scalars disposed at once.</summary>
    public static Tensor Between(this Tensor a, long lo, long hi) { using var l = lo.ToScalar(); using var h = hi.ToScalar(); return a.clamp(l, h); }

    /// <summary><c>a mod v</c> (integer tensors: the low bits when v is a power of two).</summary>
    public static Tensor Modulo(this Tensor a, long v) { using var s = v.ToScalar(); return a.remainder(s); }

    /// <summary><c>⌊a / v⌋</c> (integer tensors: a right shift when v is a power of two).</summary>
    public static Tensor FloorOver(this Tensor a, long v) { using var s = v.ToScalar(); return a.floor_divide(s); }

    /// <summary><c>clamp_max(v)</c>.</summary>
    public static Tensor AtMost(this Tensor a, long v) { using var s = v.ToScalar(); return a.clamp_max(s); }

    /// <summary>a == v.</summary>
    public static Tensor EqualTo(this Tensor a, long v) { using var s = v.ToScalar(); return a.eq(s); }

    /// <summary>a &gt; v.</summary>
    public static Tensor GreaterThan(this Tensor a, long v) { using var s = v.ToScalar(); return a.gt(s); }

    /// <summary>a ≥ v.</summary>
    public static Tensor GreaterOrEqual(this Tensor a, long v) { using var s = v.ToScalar(); return a.ge(s); }

    /// <summary>a &lt; v.</summary>
    public static Tensor LessThan(this Tensor a, long v) { using var s = v.ToScalar(); return a.lt(s); }

    /// <summary>a ≤ v.</summary>
    public static Tensor LessOrEqual(this Tensor a, double v) { using var s = v.ToScalar(); return a.le(s); }

    /// <summary>A tensor of <paramref name="shape"/> filled with <paramref name="v"/>.</summary>
    public static Tensor Full(long[] shape, long v, ScalarType dtype, Device device) { using var s = v.ToScalar(); return full(shape, s, dtype, device); }

    /// <summary>start, start + step, … below end.</summary>
    public static Tensor Arange(long start, long end, ScalarType dtype, Device device, long step = 1)
    {
        using var a = start.ToScalar();
        using var b = end.ToScalar();
        using var c = step.ToScalar();
        return arange(a, b, c, dtype, device);
    }
}
