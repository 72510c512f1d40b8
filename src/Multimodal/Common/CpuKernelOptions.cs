using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Multimodal.Common;

/// <summary>The switches of this library's CPU kernels, in one place: the products a decode step sends to our own kernels
/// instead of libtorch (one bfloat16 row, one or 5–8 float32 rows, 1–8 rows times quantized weights, one query position's attention). Every language model's and Flamingo block's linears take the
/// same routing, so these switches decide for all of them.</summary>
public sealed record CpuKernelOptions
{
    /// <summary>The environment variable that turns every kernel off when set to 0 (to compare with libtorch).</summary>
    public const string Variable = "MULTIMODAL_CPU_KERNELS";

    private static CpuKernelOptions _current = new();

    /// <summary>Whether any kernel runs (default: unless <see cref="Variable"/> is 0).</summary>
    public bool Enabled { get; init; } = Environment.GetEnvironmentVariable(Variable) != "0";

    /// <summary>One bfloat16 row (a bf16 model's decode step) through our matrix–vector kernel.</summary>
    public bool Bf16SingleRow { get; init; } = true;

    /// <summary>One float32 row (a float32 model's decode step) through our matrix–vector kernel.</summary>
    public bool Float32SingleRow { get; init; } = true;

    /// <summary>5–8 float32 rows (a batched decode step) through our few-rows kernel.</summary>
    public bool Float32FewRows { get; init; } = true;

    /// <summary>A decode step's attention (one query position over the cache, float32) through our kernel
    /// (<c>DecodeAttention</c>), reading the cache's keys and values where they lie; for OPT also the layer around it (its
    /// norms, residual adds and ReLU on the step's rows in our own code, <c>DecodeRows</c>).</summary>
    public bool DecodeAttention { get; init; } = true;

    /// <summary>1–8 rows times a quantized weight (<see cref="WeightQuantization"/>) through our quantized kernel (off: the
    /// weights are dequantized for libtorch at every product).</summary>
    public bool Quantized { get; init; } = true;

    /// <summary>Whether a quantized product also quantizes its input rows, to 8 bits per block of 32 inputs (llama.cpp's
    /// Q8_0 activations), and multiplies in integers: the weights are then read at the memory's speed rather than the
    /// float conversions'. The product becomes the dequantized weights times the dequantized input (each input within half
    /// a step, max|block| / 254, of its value). Off: the input stays float32 and the product is the dequantized weights
    /// times the input, to float32 accumulation.</summary>
    public bool QuantizedInputs { get; init; } = true;

    /// <summary>Whether kernels that have both use their AVX-512 form rather than their AVX2 form (tests turn it off to run
    /// the AVX2 form on an AVX-512 machine).</summary>
    internal bool Avx512 { get; init; } = true;

    /// <summary>The switches in force for the process (replace the record to change them; calls already running keep theirs).</summary>
    public static CpuKernelOptions Current
    {
        get => Scoped.Value ?? Volatile.Read(ref _current);
        set => Volatile.Write(ref _current, value ?? throw new ArgumentNullException(nameof(value)));
    }

    private static readonly AsyncLocal<CpuKernelOptions?> Scoped = new();

    /// <summary>Puts <paramref name="options"/> in force for the calling flow (this thread and the tasks it starts) until
    /// disposed, leaving other callers with <see cref="Current"/>'s process-wide record (tests compare paths side by side).</summary>
    internal static IDisposable InThisFlow(CpuKernelOptions options)
    {
        var before = Scoped.Value;
        Scoped.Value = options;
        return Ownership.Undo(() => Scoped.Value = before);
    }

    /// <summary>Whether this machine can run the kernels at all: AVX-512, and libtorch's own OpenMP runtime (Linux), whose
    /// team they run on.</summary>
    public static bool Supported => OpenMpTeam.Available && Vector512.IsHardwareAccelerated && Avx512F.IsSupported;

    /// <summary>Whether this machine can run the kernels that also have an AVX2 form (the quantized products with quantized
    /// inputs): AVX2 and FMA, and libtorch's OpenMP runtime.</summary>
    public static bool SupportedAvx2 => OpenMpTeam.Available && Avx2.IsSupported && Fma.IsSupported;
}
