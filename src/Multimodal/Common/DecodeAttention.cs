using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Multimodal.Common;

/// <summary>PyTorch's <c>torch.nn.functional.scaled_dot_product_attention</c> for one query position — a decode step's
/// attention over its cache — on the CPU in float32: softmax(q·kᵀ/√d + mask)·v, each score a float32 dot product scaled
/// and masked as libtorch's flash kernel does, up to the order of the sums.</summary>
/// <remarks>Reads keys and values where they lie, through their strides (the cache's views into its storage), so a step
/// neither concatenates the cache nor lets libtorch copy it: in the 1.07 B int8 decode, libtorch's concatenation, attention
/// and head merge had taken ~80 µs of each layer's ~100 µs outside the products; with this kernel and the cache written in
/// place, a step spends 3.9–5.6 ms (median 4.3) outside the products against 5.0–5.5 (median 5.2) before (four alternating
/// pairs of runs). The (batch, head) pairs are split over libtorch's OpenMP team. Operands are checked here, at the entry; the switch is <see cref="CpuKernelOptions.DecodeAttention"/>.</remarks>
internal static unsafe class DecodeAttention
{
    /// <summary>Most keys one query reads here: its scores live on the worker's stack (32 KB).</summary>
    internal const long MaxKeys = 8192;

    /// <summary>Widest head here: its sums live on the worker's stack.</summary>
    internal const long MaxHeadDim = 512;

    /// <summary>Whether the kernel runs: this machine supports it and <see cref="CpuKernelOptions.Current"/> allows it.</summary>
    internal static bool Available => CpuKernelOptions.Supported && CpuKernelOptions.Current is { Enabled: true, DecodeAttention: true };

    [ThreadStatic] private static long _calls;

    /// <summary>Attentions this thread has computed here.</summary>
    internal static long Calls => _calls;

    /// <summary>The attention when the kernel takes it: q (B, H, 1, d), k and v (B, H, T, d) with unit stride along d (any
    /// strides elsewhere), 1 ≤ T ≤ <see cref="MaxKeys"/>, d ≤ <see cref="MaxHeadDim"/>, an additive mask that broadcasts
    /// to (B, H, 1, T) or none, all float32 on the CPU, autograd off; false, and nothing computed, otherwise. The result is
    /// (B, H, 1, d), contiguous.</summary>
    public static bool TryCompute(Tensor q, Tensor k, Tensor v, Tensor? mask, [System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out Tensor? result)
    {
        result = null;
        if (!Available || is_grad_enabled() || !Fits(q) || !Fits(k) || !Fits(v)) return false;
        long b = q.size(0), h = q.size(1), d = q.size(3), t = k.size(2);
        if (q.size(2) != 1 || d is < 1 or > MaxHeadDim || t is < 1 or > MaxKeys
            || k.size(0) != b || k.size(1) != h || k.size(3) != d || !Shape.Of(v).SequenceEqual(Shape.Of(k))
            || !MaskStrides(mask, b, h, t, out var maskStrides))
            return false;
        var job = new Job
        {
            Batch = b, Heads = h, Keys = t, Dim = d,
            QBatch = q.stride(0), QHead = q.stride(1),
            KBatch = k.stride(0), KHead = k.stride(1), KKey = k.stride(2),
            VBatch = v.stride(0), VHead = v.stride(1), VKey = v.stride(2),
            MaskBatch = maskStrides[0], MaskHead = maskStrides[1], MaskKey = maskStrides[3],
        };
        result = Compute(q, k, v, mask, job, [b, h, 1, d]);
        return true;
    }

    /// <summary>The attention of one query position per batch row over a <c>KvCache</c> layer's storage,
    /// as <c>KvCache.AppendRows</c> hands it out: q (B, 1, H·d) contiguous, the keys and values
    /// (B, H, capacity, d) contiguous with their first <paramref name="length"/> positions filled, the mask as for
    /// <see cref="TryCompute"/> over those positions; all float32 on the CPU, autograd off. The result is (B, 1, H·d), the
    /// heads already merged; false, and nothing computed, otherwise.</summary>
    public static bool TryComputeRows(Tensor q, int heads, Tensor keyStorage, Tensor valueStorage, long length, Tensor? mask,
        [System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out Tensor? result)
    {
        result = null;
        if (heads < 1 || q.dtype != ScalarType.Float32 || q.device_type != DeviceType.CPU || q.dim() != 3
            || !q.is_contiguous() || q.size(1) != 1 || q.size(2) % heads != 0)
            return false;
        long b = q.size(0), d = q.size(2) / heads;
        bool Storage(Tensor s) => Fits(s) && s.is_contiguous() && s.size(0) == b && s.size(1) == heads && s.size(3) == d;
        if (!TakesRows(b, heads, d, length, mask) || !Storage(keyStorage) || !Storage(valueStorage)
            || valueStorage.size(2) != keyStorage.size(2) || length > keyStorage.size(2))
            return false;
        MaskStrides(mask, b, heads, length, out var maskStrides);
        long capacity = keyStorage.size(2);
        var job = new Job
        {
            Batch = b, Heads = heads, Keys = length, Dim = d,
            QBatch = heads * d, QHead = d,
            KBatch = heads * capacity * d, KHead = capacity * d, KKey = d,
            VBatch = heads * capacity * d, VHead = capacity * d, VKey = d,
            MaskBatch = maskStrides[0], MaskHead = maskStrides[1], MaskKey = maskStrides[3],
        };
        result = Compute(q, keyStorage, valueStorage, mask, job, [b, 1, heads * d]);
        return true;
    }

    /// <summary>Whether <see cref="TryComputeRows"/> takes <paramref name="batch"/> rows of <paramref name="heads"/> heads of
    /// width <paramref name="d"/> over <paramref name="keys"/> positions with this mask (given a cache storage that holds
    /// them): what a caller checks before it writes a step's keys and values into its cache.</summary>
    public static bool TakesRows(long batch, int heads, long d, long keys, Tensor? mask) =>
        Available && !is_grad_enabled() && heads >= 1 && d is >= 1 and <= MaxHeadDim && keys is >= 1 and <= MaxKeys
        && MaskStrides(mask, batch, heads, keys, out _);

    // The mask's strides over (B, H, 1, T), 0 where it broadcasts; false when it is not an additive float32 CPU mask that
    // broadcasts to that shape.
    private static bool MaskStrides(Tensor? mask, long b, long h, long t, out long[] strides)
    {
        strides = new long[4];
        if (mask is null) return true;
        if (mask.dtype != ScalarType.Float32 || mask.device_type != DeviceType.CPU || mask.dim() != 4
            || mask.size(0) is var m0 && m0 != 1 && m0 != b || mask.size(1) is var m1 && m1 != 1 && m1 != h
            || mask.size(2) != 1 || mask.size(3) != t)
            return false;
        for (int i = 0; i < 4; i++) strides[i] = mask.size(i) == 1 ? 0 : mask.stride(i);
        return true;
    }

    private static bool Fits(Tensor t) =>
        t.dtype == ScalarType.Float32 && t.device_type == DeviceType.CPU && t.dim() == 4 && t.stride(3) == 1 && t.numel() > 0;

    // The job's sizes and strides are the operands' own (checked by the caller); here the addresses and the run.
    private static Tensor Compute(Tensor q, Tensor k, Tensor v, Tensor? mask, Job job, long[] shape)
    {
        var result = empty(shape, ScalarType.Float32);
        // A strided operand is read through a one-dimensional view from its first element to its last: a contiguous span
        // whose length bounds every read below (the kernel's own check that the strides stay inside the tensor).
        var views = new List<Tensor>(4);
        Tensor Span(Tensor t)
        {
            if (t.is_contiguous()) return t;
            long last = 0;
            for (int i = 0; i < t.dim(); i++) last = checked(last + (t.size(i) - 1) * t.stride(i));
            views.Add(t.as_strided([checked(last + 1)], [1]));
            return views[^1];
        }
        try
        {
            fixed (byte* qp = Span(q).bytes)
            fixed (byte* kp = Span(k).bytes)
            fixed (byte* vp = Span(v).bytes)
            fixed (byte* mp = mask is null ? default : Span(mask).bytes)
            fixed (byte* op = result.bytes)
            {
                job.Q = (float*)qp; job.K = (float*)kp; job.V = (float*)vp; job.Mask = (float*)mp; job.Output = (float*)op;
                job.Scale = (float)(1.0 / Math.Sqrt(job.Dim));
                OpenMpTeam.Run(&RunPart, &job, product: false);
            }
        }
        finally
        {
            foreach (var view in views) view.Dispose();
        }
        OpenMpTeam.ThrowIfFailed(nameof(DecodeAttention));
        _calls++;
        return result;
    }

    private struct Job
    {
        public float* Q, K, V, Mask, Output;
        public long Batch, Heads, Keys, Dim;
        public long QBatch, QHead, KBatch, KHead, KKey, VBatch, VHead, VKey, MaskBatch, MaskHead, MaskKey;
        public float Scale;
    }

    [UnmanagedCallersOnly]
    private static void RunPart(void* data) => OpenMpTeam.Guard(&Part, data);

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Part(void* data)
    {
        var job = (Job*)data;
        var (start, end) = OpenMpTeam.Band(job->Batch * job->Heads, 1);
        float* scores = stackalloc float[(int)job->Keys];
        float* sums = stackalloc float[(int)job->Dim];
        for (long pair = start; pair < end; pair++) Head(job, pair / job->Heads, pair % job->Heads, scores, sums);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Head(Job* job, long bi, long hi, float* scores, float* sums)
    {
        long d = job->Dim, keys = job->Keys;
        float* q = job->Q + bi * job->QBatch + hi * job->QHead;
        float* k = job->K + bi * job->KBatch + hi * job->KHead;
        float* v = job->V + bi * job->VBatch + hi * job->VHead;
        float* mask = job->Mask is null ? null : job->Mask + bi * job->MaskBatch + hi * job->MaskHead;

        float max = float.NegativeInfinity;
        for (long j = 0; j < keys; j++)
        {
            float s = Dot(q, k + j * job->KKey, d) * job->Scale;
            if (mask is not null) s += mask[j * job->MaskKey];
            scores[j] = s;
            max = MathF.Max(max, s);
        }
        float total = Exponentials(scores, keys, max);

        for (long c = 0; c < d; c++) sums[c] = 0;
        for (long j = 0; j < keys; j++) AddScaled(sums, v + j * job->VKey, scores[j], d);
        float* o = job->Output + (bi * job->Heads + hi) * d;
        for (long c = 0; c < d; c++) o[c] = sums[c] / total;
    }

    // scores[j] = exp(scores[j] − max) in place, and their sum.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Exponentials(float* scores, long n, float max)
    {
        long j = 0;
        float total = 0;
#if NET9_0_OR_GREATER
        var maxv = Vector512.Create(max);
        var acc = Vector512<float>.Zero;
        for (; j + 16 <= n; j += 16)
        {
            var e = Vector512.Exp(Vector512.Load(scores + j) - maxv);
            e.Store(scores + j);
            acc += e;
        }
        total = Vector512.Sum(acc);
#endif
        for (; j < n; j++) total += scores[j] = MathF.Exp(scores[j] - max);
        return total;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Dot(float* a, float* b, long n)
    {
        var acc = Vector512<float>.Zero;
        long i = 0;
        for (; i + 16 <= n; i += 16) acc = Avx512F.FusedMultiplyAdd(Vector512.Load(a + i), Vector512.Load(b + i), acc);
        float sum = Vector512.Sum(acc);
        for (; i < n; i++) sum += a[i] * b[i];
        return sum;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void AddScaled(float* sums, float* row, float p, long n)
    {
        var pv = Vector512.Create(p);
        long i = 0;
        for (; i + 16 <= n; i += 16) Vector512.Store(Avx512F.FusedMultiplyAdd(Vector512.Load(row + i), pv, Vector512.Load(sums + i)), sums + i);
        for (; i < n; i++) sums[i] += row[i] * p;
    }
}
