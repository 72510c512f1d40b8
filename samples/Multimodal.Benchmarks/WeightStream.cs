using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using Multimodal.Common;
using TorchSharp;
using static TorchSharp.torch;

namespace Multimodal.Benchmarks;

/// <summary>The floor of a decode step measured on the step's own bytes: one pass of a plain vectorised loop over exactly
/// the tensors the step reads (the model's own memory, wherever it was placed, mapped file pages included), on
/// libtorch's OpenMP team, in one parallel region — each thread reads its half of every tensor. Timed just before each
/// step, it judges the step against what this machine gives simple code for the same bytes at that moment (its read rate
/// drifts between ~30 and ~60 GB/s within minutes).</summary>
internal sealed unsafe class WeightStream
{
    private readonly (nint Start, long Bytes)[] _tensors;

    /// <summary>The tensors to stream: CPU, contiguous (a quantized layer's integers and scales, a float weight); tensors
    /// that share their memory (a tied head) are read once.</summary>
    public WeightStream(IEnumerable<Tensor> tensors)
    {
        _tensors = tensors.Where(t => t.numel() > 0).Select(t =>
        {
            if (t.device_type != DeviceType.CPU || !t.is_contiguous()) throw new ArgumentException("the weights to stream are contiguous CPU tensors");
            // Native memory (libtorch's or a mapped file): its address outlives the span.
            return ((nint)Unsafe.AsPointer(ref MemoryMarshal.GetReference(t.bytes)), t.numel() * t.ElementSize);
        }).DistinctBy(t => t.Item1).ToArray();
        Bytes = _tensors.Sum(t => t.Bytes);
    }

    /// <summary>The bytes one pass reads.</summary>
    public long Bytes { get; }

    /// <summary>Whether the pass can run (libtorch's OpenMP team was found).</summary>
    public static bool Available => OpenMpTeam.Available;

    /// <summary>Seconds for one pass over all the tensors.</summary>
    public double Pass()
    {
        fixed ((nint Start, long Bytes)* tensors = _tensors)
        {
            var job = new Job(tensors, _tensors.Length);
            var clock = Stopwatch.StartNew();
            OpenMpTeam.Run(&RunPart, &job);
            double seconds = clock.Elapsed.TotalSeconds;
            OpenMpTeam.ThrowIfFailed(nameof(WeightStream));
            return seconds;
        }
    }

    private readonly struct Job((nint Start, long Bytes)* tensors, int count)
    {
        public readonly (nint Start, long Bytes)* Tensors = tensors;
        public readonly int Count = count;
    }

    [UnmanagedCallersOnly]
    private static void RunPart(void* data) => OpenMpTeam.Guard(&Part, data);

    private static void Part(void* data)
    {
        var job = (Job*)data;
        var sum = Vector256<byte>.Zero;
        for (int t = 0; t < job->Count; t++)
        {
            var (start, bytes) = job->Tensors[t];
            var (from, to) = OpenMpTeam.Band(bytes / 128, 1);             // this thread's share, in 128-byte steps
            sum += Read((byte*)start + from * 128, (to - from) * 128);
            if (from == 0) sum += Tail((byte*)start, bytes / 128 * 128, bytes);   // the first thread reads the rest
        }
        Sink = sum;
    }

    // Four loads per step, summed so the reads cannot be dropped.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static Vector256<byte> Read(byte* p, long bytes)
    {
        var (a, b, c, d) = (Vector256<byte>.Zero, Vector256<byte>.Zero, Vector256<byte>.Zero, Vector256<byte>.Zero);
        for (long i = 0; i < bytes; i += 128)
        {
            a += Vector256.Load(p + i); b += Vector256.Load(p + i + 32);
            c += Vector256.Load(p + i + 64); d += Vector256.Load(p + i + 96);
        }
        return a + b + c + d;
    }

    private static Vector256<byte> Tail(byte* p, long from, long to)
    {
        byte sum = 0;
        for (long i = from; i < to; i++) sum += p[i];
        return Vector256.Create(sum);
    }

    [ThreadStatic] private static Vector256<byte> _sink;

    private static Vector256<byte> Sink { set => _sink = value; }
}
