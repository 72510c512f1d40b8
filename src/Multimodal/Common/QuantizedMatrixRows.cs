using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Multimodal.Common;

/// <summary>1–8 rows times a quantized weight (<see cref="QuantizedLinear"/>) on the CPU — a decode step's linear of a
/// quantized model — read straight from the integers, so the weights are read once, in a quarter (8 bits) or about a
/// sixth (4 bits) of float32's bytes; the result takes the input's dtype. Two paths: with
/// <see cref="CpuKernelOptions.QuantizedInputs"/> (the default) the input rows are rounded to 8 bits too and multiplied in
/// integers (AVX-512 BW or AVX2: the other parts of this class); without, each weight vector is widened to float32 in
/// registers, scaled (per group for 4 bits) and multiplied into every row in float32 (AVX-512, below).</summary>
/// <remarks>Runs on libtorch's OpenMP team like <see cref="Float32FewRows"/>, under <see cref="CpuKernelOptions"/>; its
/// operands are checked here, at the entry, and anything it does not take goes to the dequantized path.</remarks>
internal static unsafe partial class QuantizedMatrixRows
{
    private const int MaxRows = 8;

    [ThreadStatic] private static long _calls;

    /// <summary>Products this thread has computed here, on either path.</summary>
    internal static long Calls => _calls;

    [ThreadStatic] private static long _integerCalls;

    /// <summary>Products this thread has computed here with quantized inputs, in integers.</summary>
    internal static long IntegerCalls => _integerCalls;

    /// <summary>Whether the kernel runs on this machine under the current options.</summary>
    internal static bool Available => (CpuKernelOptions.Supported || CpuKernelOptions.SupportedAvx2) && CpuKernelOptions.Current is { Enabled: true, Quantized: true };

    // The float path needs AVX-512; the integer path runs in AVX-512 BW or, without it (or with CpuKernelOptions.Avx512 off),
    // in AVX2.
    private enum Path { None, Float, Integers512, Integers256 }

    private static Path Pick(CpuKernelOptions options)
    {
        bool avx512 = CpuKernelOptions.Supported && options.Avx512;
        if (!options.QuantizedInputs) return avx512 ? Path.Float : Path.None;
        if (avx512 && Avx512BW.IsSupported) return Path.Integers512;
        return CpuKernelOptions.SupportedAvx2 ? Path.Integers256 : Path.None;
    }

    /// <summary>The product when the kernel takes it: input (…, K) float32 or bfloat16 with 1–8 rows, contiguous on the CPU,
    /// bias (N) of the input's dtype or null, autograd off, and K a multiple of 16; false, and nothing computed, otherwise.
    /// The input rows are quantized when <see cref="CpuKernelOptions.QuantizedInputs"/> is on.</summary>
    public static bool TryLinear(Tensor input, QuantizedLinear.Weights q, Tensor? bias, [System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out Tensor? result)
    {
        result = TryLinearEach(input, [(q, bias)], out var results) ? results[0] : null;
        return result is not null;
    }

    // Layers one pass takes at most: their jobs live on the caller's stack.
    private const int MaxLayers = 8;

    /// <summary>The products of one input with several layers quantized alike (the same kind and width K: an attention's
    /// q, k and v projections) in one parallel region, the input prepared once: each call's fixed cost (the team's fork and
    /// join, the ramp of the first reads) is paid once instead of per layer. Up to 8 layers, each one <see cref="TryLinear"/>
    /// takes; false, and nothing computed, otherwise.</summary>
    public static bool TryLinearEach(Tensor input, IReadOnlyList<(QuantizedLinear.Weights Q, Tensor? Bias)> layers,
        [System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out Tensor[]? results)
    {
        results = null;
        var options = CpuKernelOptions.Current;
        if (layers.Count is 0 or > MaxLayers || !options.Enabled || !options.Quantized || is_grad_enabled() || input.device_type != DeviceType.CPU || !input.is_contiguous()
            || input.dim() < 1 || input.dtype is not (ScalarType.Float32 or ScalarType.BFloat16))
            return false;
        var (kind, k) = (layers[0].Q.Kind, layers[0].Q.K);
        if (input.size(-1) != k || k % 16 != 0) return false;
        foreach (var (q, bias) in layers)
            if (q.Kind != kind || q.K != k || !Takes(q) || bias is not null && (bias.dtype != input.dtype || bias.numel() != q.N || bias.device_type != DeviceType.CPU))
                return false;
        long rows = input.numel() / k;
        if (rows is < 1 or > MaxRows) return false;
        var path = Pick(options);                             // None where the machine cannot run the path asked for
        if (path == Path.None) return false;
        results = Compute(input, layers, (int)rows, path);
        _calls += layers.Count;
        if (path != Path.Float) _integerCalls += layers.Count;
        return true;
    }

    // A quantized layer's own tensors as the kernels read them (checked at every call: loading a saved quantized folder
    // swaps their storage for the file's after the layer is built).
    private static bool Takes(QuantizedLinear.Weights q) =>
        q.Values.device_type == DeviceType.CPU && q.Values.is_contiguous() && q.Scales.is_contiguous()
        && q.Values.dtype == (q.Kind == WeightQuantization.Int8 ? ScalarType.Int8 : ScalarType.Byte) && q.Scales.dtype == ScalarType.Float32
        && q.Values.numel() == (q.Kind == WeightQuantization.Int8 ? checked(q.N * q.K) : checked(q.N * q.K / 2))
        && q.Scales.numel() == (q.Kind == WeightQuantization.Int8 ? q.N : checked(q.N * q.K / QuantizedLinear.Group));

    private static Tensor[] Compute(Tensor input, IReadOnlyList<(QuantizedLinear.Weights Q, Tensor? Bias)> layers, int m, Path path)
    {
        using var scope = NewDisposeScope();
        bool float32 = input.dtype == ScalarType.Float32;
        var x = float32 ? input : input.to(ScalarType.Float32);   // contiguous: checked
        long k = layers[0].Q.K;
        bool int4 = layers[0].Q.Kind == WeightQuantization.Int4;
        var outputs = new Tensor[layers.Count];
        var jobs = stackalloc Job[layers.Count];
        var layout = new QuantizedInput.Layout(k, int4);
        float* xp = (float*)Address(x);
        byte* inputs = path == Path.Float ? null : QuantizedInput.Prepare(xp, m, k, layout, int4);
        for (int i = 0; i < layers.Count; i++)
        {
            var (q, bias) = layers[i];
            outputs[i] = LinearExtensions.KernelOutput(input, q.N, ScalarType.Float32);
            var b = bias is null || float32 && bias.is_contiguous() ? bias : bias.to(ScalarType.Float32).contiguous();
            jobs[i] = new Job(Address(q.Values), (float*)Address(q.Scales), xp, b is null ? null : (float*)Address(b), (float*)Address(outputs[i]),
                q.N, k, m, inputs, layout);
        }
        var list = new JobList(jobs, layers.Count, path switch
        {
            Path.Float => int4 ? &Int4Part : &Int8Part,
            // 8 bits: the AVX2 form is the faster one on AVX-512 machines too. Measured on this 2-core Zen 4 (which runs
            // 512-bit operations as two 256-bit halves), one row of the 2.7b's shapes: 30.7–46.5 GB/s against an AVX-512
            // form's 22.9–25.4, whose sign selection needed negated inputs and a blend where AVX2 has vpsignb.
            Path.Integers512 => int4 ? &Int4IntegersPart : &Int8Avx2Part,
            _ => int4 ? &Int4Avx2Part : &Int8Avx2Part,
        });
        OpenMpTeam.Run(&RunJobs, &list);
        OpenMpTeam.ThrowIfFailed(nameof(QuantizedMatrixRows));
        return outputs.Select(o => (float32 ? o : o.to(input.dtype)).MoveToOuterDisposeScope()).ToArray();
    }

    // A CPU tensor's data lives in native memory (libtorch's or a mapped file) that the GC never moves: its address stays
    // valid while the tensor does, which every tensor here outlives the region by.
    private static byte* Address(Tensor t) => (byte*)Unsafe.AsPointer(ref MemoryMarshal.GetReference(t.bytes));

    // Every team thread runs its share of each job in turn, with no barrier between the jobs.
    private readonly struct JobList(Job* jobs, int count, delegate*<void*, void> part)
    {
        public readonly Job* Jobs = jobs;
        public readonly int Count = count;
        public readonly delegate*<void*, void> Part = part;
    }

    [UnmanagedCallersOnly]
    private static void RunJobs(void* data) => OpenMpTeam.Guard(&JobsPart, data);

    private static void JobsPart(void* data)
    {
        var list = (JobList*)data;
        for (int i = 0; i < list->Count; i++) list->Part(list->Jobs + i);
    }

    private readonly struct Job(byte* weight, float* scales, float* x, float* bias, float* output, long n, long k, int m,
        byte* inputs, QuantizedInput.Layout layout)
    {
        public readonly byte* Weight = weight;
        public readonly float* Scales = scales, X = x, Bias = bias, Output = output;
        public readonly long N = n, K = k;
        public readonly int M = m;

        /// <summary>The quantized input rows (<see cref="QuantizedInput"/>), or null on the float path.</summary>
        public readonly byte* Inputs = inputs;
        public readonly QuantizedInput.Layout Layout = layout;

        public QuantizedInput.Row Input(int j) => new(Inputs + j * Layout.Stride, Layout);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Int8Part(void* data)
    {
        var job = (Job*)data;
        var (start, end) = OpenMpTeam.Band(job->N, 4);
        if (job->M == 1)
        {
            Int8SingleRow(job, start, end);
            return;
        }
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

    // A decode step's single row: four weight rows share each input load, accumulators stay in registers.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Int8SingleRow(Job* job, long start, long end)
    {
        long k = job->K;
        float* x = job->X;
        long r = start;
        for (; r + 4 <= end; r += 4)
        {
            sbyte* w0 = (sbyte*)job->Weight + r * k, w1 = w0 + k, w2 = w1 + k, w3 = w2 + k;
            var a0 = Vector512<float>.Zero; var a1 = a0; var a2 = a0; var a3 = a0;
            for (long i = 0; i < k; i += 16)
            {
                var xv = Vector512.Load(x + i);
                a0 = Avx512F.FusedMultiplyAdd(Widen(w0 + i), xv, a0);
                a1 = Avx512F.FusedMultiplyAdd(Widen(w1 + i), xv, a1);
                a2 = Avx512F.FusedMultiplyAdd(Widen(w2 + i), xv, a2);
                a3 = Avx512F.FusedMultiplyAdd(Widen(w3 + i), xv, a3);
            }
            StoreOne(job, r, a0, job->Scales[r]); StoreOne(job, r + 1, a1, job->Scales[r + 1]);
            StoreOne(job, r + 2, a2, job->Scales[r + 2]); StoreOne(job, r + 3, a3, job->Scales[r + 3]);
        }
        for (; r < end; r++)
        {
            sbyte* w = (sbyte*)job->Weight + r * k;
            var a = Vector512<float>.Zero;
            for (long i = 0; i < k; i += 16) a = Avx512F.FusedMultiplyAdd(Widen(w + i), Vector512.Load(x + i), a);
            StoreOne(job, r, a, job->Scales[r]);
        }
    }

    // 16 int8 weights as float32 (sign-extended, converted).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> Widen(sbyte* w) => Avx512F.ConvertToVector512Single(Avx512F.ConvertToVector512Int32(Vector128.Load(w)));

    private static void StoreOne(Job* job, long r, Vector512<float> acc, float scale) => StoreOne(job, r, Vector512.Sum(acc), scale);

    private static void StoreOne(Job* job, long r, float sum, float scale) =>
        job->Output[r] = sum * scale + (job->Bias is null ? 0 : job->Bias[r]);

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Int4Part(void* data)
    {
        var job = (Job*)data;
        var (start, end) = OpenMpTeam.Band(job->N, 2);
        if (job->M == 1)
        {
            Int4SingleRow(job, start, end);
            return;
        }
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

    // A decode step's single row: two weight rows per pass, each group's 32 weights unpacked, scaled and multiplied in registers.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Int4SingleRow(Job* job, long start, long end)
    {
        long k = job->K, groups = k / QuantizedLinear.Group, rowBytes = k / 2;
        float* x = job->X;
        var low = Vector128.Create((byte)15);
        var offset = Vector512.Create(8f);
        long r = start;
        for (; r + 2 <= end; r += 2)
        {
            byte* w0 = job->Weight + r * rowBytes, w1 = w0 + rowBytes;
            float* s0 = job->Scales + r * groups, s1 = s0 + groups;
            var a0 = Vector512<float>.Zero; var a1 = a0;
            for (long g = 0; g < groups; g++)
            {
                var xa = Vector512.Load(x + g * 32);
                var xb = Vector512.Load(x + g * 32 + 16);
                var b0 = Vector128.Load(w0 + g * 16);
                var b1 = Vector128.Load(w1 + g * 16);
                var d0 = Avx512F.FusedMultiplyAdd(Nibbles(Vector128.ShiftRightLogical(b0, 4), offset), xb, Nibbles(b0 & low, offset) * xa);
                var d1 = Avx512F.FusedMultiplyAdd(Nibbles(Vector128.ShiftRightLogical(b1, 4), offset), xb, Nibbles(b1 & low, offset) * xa);
                a0 = Avx512F.FusedMultiplyAdd(d0, Vector512.Create(s0[g]), a0);
                a1 = Avx512F.FusedMultiplyAdd(d1, Vector512.Create(s1[g]), a1);
            }
            StoreOne(job, r, a0, 1f);
            StoreOne(job, r + 1, a1, 1f);
        }
        for (; r < end; r++)
        {
            byte* w = job->Weight + r * rowBytes;
            float* s = job->Scales + r * groups;
            var a = Vector512<float>.Zero;
            for (long g = 0; g < groups; g++)
            {
                var b = Vector128.Load(w + g * 16);
                var d = Avx512F.FusedMultiplyAdd(Nibbles(Vector128.ShiftRightLogical(b, 4), offset), Vector512.Load(x + g * 32 + 16),
                    Nibbles(b & low, offset) * Vector512.Load(x + g * 32));
                a = Avx512F.FusedMultiplyAdd(d, Vector512.Create(s[g]), a);
            }
            StoreOne(job, r, a, 1f);
        }
    }

    // 16 stored nibbles (0…15) as the float32 values they code (q − 8).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> Nibbles(Vector128<byte> nibbles, Vector512<float> offset) =>
        Avx512F.ConvertToVector512Single(Avx512F.ConvertToVector512Int32(nibbles)) - offset;

    private static void Store(Job* job, long r, Vector512<float>* acc, float scale)
    {
        float bias = job->Bias is null ? 0 : job->Bias[r];
        for (int j = 0; j < job->M; j++) job->Output[j * job->N + r] = Vector512.Sum(acc[j]) * scale + bias;
    }
}
