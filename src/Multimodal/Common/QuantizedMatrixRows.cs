using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Multimodal.Common;

/// <summary>1–8 rows times a quantized weight (<see cref="QuantizedLinear"/>) on the CPU — a decode step's linear of a
/// quantized model — read straight from the integers: each weight vector is widened to float32 in registers, scaled
/// (per group for 4 bits) and multiplied into every row, so the weights are read once, in a quarter (8 bits) or about a
/// sixth (4 bits) of float32's bytes. Sums are float32; the result takes the input's dtype.</summary>
/// <remarks>Runs on libtorch's OpenMP team like <see cref="Float32FewRows"/>, under <see cref="CpuKernelOptions"/>; its
/// operands are checked here, at the entry, and anything it does not take goes to the dequantized path.</remarks>
internal static unsafe class QuantizedMatrixRows
{
    private const int MaxRows = 8;

    [ThreadStatic] private static long _calls;

    /// <summary>Products this thread has computed here.</summary>
    internal static long Calls => _calls;

    /// <summary>Whether the kernel runs on this machine under the current options.</summary>
    internal static bool Available => CpuKernelOptions.Supported && CpuKernelOptions.Current is { Enabled: true, Quantized: true };

    /// <summary>The product when the kernel takes it: input (…, K) float32 or bfloat16 with 1–8 rows, contiguous on the CPU,
    /// bias (N) of the input's dtype or null, autograd off, and K a multiple of 16; false, and nothing computed, otherwise.</summary>
    public static bool TryLinear(Tensor input, QuantizedLinear.Weights q, Tensor? bias, [System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out Tensor? result)
    {
        result = null;
        if (!Available || is_grad_enabled() || input.device_type != DeviceType.CPU || !input.is_contiguous() || input.dim() < 1
            || input.dtype is not (ScalarType.Float32 or ScalarType.BFloat16) || input.shape[^1] != q.K || q.K % 16 != 0
            || q.Values.device_type != DeviceType.CPU || !q.Values.is_contiguous() || !q.Scales.is_contiguous()
            || q.Values.numel() != (q.Kind == WeightQuantization.Int8 ? checked(q.N * q.K) : checked(q.N * q.K / 2))
            || q.Scales.numel() != (q.Kind == WeightQuantization.Int8 ? q.N : checked(q.N * q.K / QuantizedLinear.Group)))
            return false;
        if (bias is not null && (bias.dtype != input.dtype || bias.numel() != q.N || bias.device_type != DeviceType.CPU)) return false;
        long rows = input.numel() / q.K;
        if (rows is < 1 or > MaxRows) return false;
        result = Compute(input, q, bias, (int)rows);
        _calls++;
        return true;
    }

    private static Tensor Compute(Tensor input, QuantizedLinear.Weights q, Tensor? bias, int m)
    {
        using var scope = NewDisposeScope();
        var x = input.to(ScalarType.Float32).contiguous();
        var output = empty([m, q.N], ScalarType.Float32);
        var b = bias?.to(ScalarType.Float32).contiguous();
        fixed (byte* w = q.Values.bytes)
        fixed (byte* s = q.Scales.bytes)
        fixed (byte* xp = x.bytes)
        fixed (byte* o = output.bytes)
        fixed (byte* bp = b is null ? default : b.bytes)
        {
            var job = new Job(w, (float*)s, (float*)xp, (float*)bp, (float*)o, q.N, q.K, m);
            if (q.Kind == WeightQuantization.Int8) OpenMpTeam.Run(&RunInt8, &job);
            else OpenMpTeam.Run(&RunInt4, &job);
        }
        OpenMpTeam.ThrowIfFailed(nameof(QuantizedMatrixRows));
        var shape = input.shape.ToArray();
        shape[^1] = q.N;
        return output.view(shape).to(input.dtype).MoveToOuterDisposeScope();
    }

    private readonly struct Job(byte* weight, float* scales, float* x, float* bias, float* output, long n, long k, int m)
    {
        public readonly byte* Weight = weight;
        public readonly float* Scales = scales, X = x, Bias = bias, Output = output;
        public readonly long N = n, K = k;
        public readonly int M = m;
    }

    [UnmanagedCallersOnly]
    private static void RunInt8(void* data) => OpenMpTeam.Guard(&Int8Part, data);

    [UnmanagedCallersOnly]
    private static void RunInt4(void* data) => OpenMpTeam.Guard(&Int4Part, data);

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Int8Part(void* data)
    {
        var job = (Job*)data;
        var (start, end) = OpenMpTeam.Band(job->N, 1);
        long k = job->K;
        var acc = stackalloc Vector512<float>[MaxRows];
        for (long r = start; r < end; r++)
        {
            sbyte* w = (sbyte*)job->Weight + r * k;
            for (int j = 0; j < job->M; j++) acc[j] = Vector512<float>.Zero;
            for (long i = 0; i < k; i += 16)
            {
                var wv = Avx512F.ConvertToVector512Single(Avx512F.ConvertToVector512Int32(Vector128.Load(w + i)));
                for (int j = 0; j < job->M; j++) acc[j] = Avx512F.FusedMultiplyAdd(wv, Vector512.Load(job->X + j * k + i), acc[j]);
            }
            Store(job, r, acc, job->Scales[r]);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Int4Part(void* data)
    {
        var job = (Job*)data;
        var (start, end) = OpenMpTeam.Band(job->N, 1);
        long k = job->K, groups = k / QuantizedLinear.Group;
        var acc = stackalloc Vector512<float>[MaxRows];
        var low = Vector128.Create((byte)15);
        var offset = Vector512.Create(8f);
        for (long r = start; r < end; r++)
        {
            byte* w = job->Weight + r * (k / 2);
            float* scales = job->Scales + r * groups;
            for (int j = 0; j < job->M; j++) acc[j] = Vector512<float>.Zero;
            for (long g = 0; g < groups; g++)
            {
                var bytes = Vector128.Load(w + g * 16);
                var s = Vector512.Create(scales[g]);
                var first = (Avx512F.ConvertToVector512Single(Avx512F.ConvertToVector512Int32(bytes & low)) - offset) * s;
                var second = (Avx512F.ConvertToVector512Single(Avx512F.ConvertToVector512Int32(Vector128.ShiftRightLogical(bytes, 4))) - offset) * s;
                float* x = job->X + g * QuantizedLinear.Group;
                for (int j = 0; j < job->M; j++)
                {
                    float* xj = x + j * k;
                    acc[j] = Avx512F.FusedMultiplyAdd(second, Vector512.Load(xj + 16), Avx512F.FusedMultiplyAdd(first, Vector512.Load(xj), acc[j]));
                }
            }
            Store(job, r, acc, 1f);
        }
    }

    private static void Store(Job* job, long r, Vector512<float>* acc, float scale)
    {
        float bias = job->Bias is null ? 0 : job->Bias[r];
        for (int j = 0; j < job->M; j++) job->Output[j * job->N + r] = Vector512.Sum(acc[j]) * scale + bias;
    }
}
