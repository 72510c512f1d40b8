using System.Text;
using System.Text.Json;
using Multimodal.Blip2;
using Multimodal.Common;
using Multimodal.Language.Opt;
using Multimodal.Loading;
using Multimodal.QFormer;
using Multimodal.Tests.TestSupport;
using Multimodal.Vision;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace Multimodal.Tests.Loading;

/// <summary>Loading streams tensor by tensor into the target dtype: peak RSS while loading stays under
/// 1.2 × the model's parameter bytes in that dtype. Measured on a BLIP-2 with an OPT-125m-sized LM
/// (about 560 MB in float32), written straight to disk so nothing large is allocated before loading.</summary>
public sealed class LoadMemoryTests(ITestOutputHelper output)
{
    private static readonly Blip2Config Config = new Blip2Config
    {
        VisionConfig = new Blip2VisionConfig { HiddenSize = 256, IntermediateSize = 1024, NumHiddenLayers = 4, NumAttentionHeads = 8 },
        QformerConfig = new QFormerConfig { HiddenSize = 256, IntermediateSize = 1024, NumHiddenLayers = 2, NumAttentionHeads = 8 },
        TextConfig = new OptConfig(),
        NumQueryTokens = 32,
    }.Normalize();

    [SkippableTheory]
    [InlineData(ScalarType.Float32)]
    [InlineData(ScalarType.BFloat16)]
    public void Peak_rss_while_loading_stays_under_1_2_times_the_parameters(ScalarType dtype)
    {
        Skip.IfNot(OperatingSystem.IsLinux(), "peak RSS is read from /proc (Linux only)");
        using var temp = new TempDir();
        long elements = WriteCheckpoint(temp.Path);

        GC.Collect();
        GC.WaitForPendingFinalizers();
        long before = ReadStatusKb("VmRSS");
        File.WriteAllText("/proc/self/clear_refs", "5"); // resets VmHWM to the current RSS
        using var model = Blip2ForConditionalGeneration.FromPretrained(temp.Path, dtype: dtype);
        long peak = ReadStatusKb("VmHWM");

        // Each stored tensor once: the tied lm_head shares embed_tokens' memory.
        long parameterBytes = elements * model.parameters().First().ElementSize;
        double ratio = (peak - before) * 1024.0 / parameterBytes;
        output.WriteLine($"{dtype}: parameters {parameterBytes / 1e6:F0} MB, RSS before {before / 1024} MB, " +
                         $"peak during load +{(peak - before) / 1024} MB = {ratio:F3} x parameters");
        Assert.True(ratio < 1.2, $"peak RSS grew by {ratio:F3} x the parameter bytes");
    }

    /// <summary>Writes config.json and a float32 model.safetensors with the published names and shapes,
    /// streaming a constant pattern so the test process never holds the weights.</summary>
    private static long WriteCheckpoint(string folder)
    {
        File.WriteAllText(Path.Combine(folder, "config.json"), JsonSerializer.Serialize(Config, PretrainedConfig.JsonOptions));
        Dictionary<string, long[]> shapes;
        using (var meta = new Blip2ForConditionalGeneration(Config, META))
            shapes = meta.state_dict().Where(kv => kv.Key != "language_model.lm_head.weight")
                .ToDictionary(kv => kv.Key, kv => kv.Value.shape);
        long offset = 0;
        var header = new Dictionary<string, object>();
        foreach (var (name, shape) in shapes)
        {
            long bytes = shape.Aggregate(4L, (a, b) => a * b);
            header[name] = new { dtype = "F32", shape, data_offsets = new[] { offset, offset + bytes } };
            offset += bytes;
        }
        var json = Encoding.UTF8.GetBytes(JsonSerializer.Serialize(header));
        using var stream = File.Create(Path.Combine(folder, "model.safetensors"));
        stream.Write(BitConverter.GetBytes((ulong)json.Length));
        stream.Write(json);
        var pattern = new byte[1 << 20];
        for (int i = 0; i < pattern.Length / 4; i++)
            BitConverter.TryWriteBytes(pattern.AsSpan(4 * i), (i % 97 - 48) * 1e-3f);
        for (long left = offset; left > 0; left -= pattern.Length)
            stream.Write(pattern, 0, (int)Math.Min(pattern.Length, left));
        return offset / 4;
    }

    [SkippableFact]
    public void Streaming_a_pt_checkpoint_peaks_at_a_small_fraction_of_its_largest_tensor()
    {
        Skip.IfNot(OperatingSystem.IsLinux(), "peak RSS is read from /proc (Linux only)");
        using var temp = new TempDir();
        string path = Path.Combine(temp.Path, "checkpoint.pt");
        // Four 64 MiB float32 tensors, the last two sharing one storage (as tied weights are saved).
        const long rows = 4096, cols = 4096;
        var tensors = new (string Name, string Storage)[] { ("a", "0"), ("b", "1"), ("tied.x", "2"), ("tied.y", "2") };
        WriteTorchZip(path, tensors, rows * cols);

        using var file = Multimodal.Loading.TorchCheckpointFile.Open(path);
        var destinations = tensors.Select(_ => zeros(rows, cols)).ToList();   // the model's own memory, counted before
        GC.Collect();
        GC.WaitForPendingFinalizers();
        long before = ReadStatusKb("VmRSS");
        File.WriteAllText("/proc/self/clear_refs", "5");
        for (int i = 0; i < tensors.Length; i++) file.CopyTo(tensors[i].Name, destinations[i]);
        long peak = ReadStatusKb("VmHWM");
        double largest = rows * cols * 4;
        double ratio = (peak - before) * 1024.0 / largest;
        output.WriteLine($".pt streaming: 4 tensors of {largest / 1e6:F0} MB, peak RSS beyond the destinations +{(peak - before) / 1024} MB = {ratio:F3} x the largest tensor");
        Assert.True(destinations[2].eq(destinations[3]).all().item<bool>(), "tied tensors differ");
        Assert.Equal((3 - 48) * 1e-3f, destinations[0][0, 3].item<float>(), 6);   // element 3 of the pattern

        // The same through Read (a whole storage, then a contiguous copy), as loading did before, for comparison.
        GC.Collect();
        GC.WaitForPendingFinalizers();
        long beforeWhole = ReadStatusKb("VmRSS");
        File.WriteAllText("/proc/self/clear_refs", "5");
        for (int i = 0; i < tensors.Length; i++)
            using (var whole = file.Read(tensors[i].Name)) destinations[i].copy_(whole);
        double wholeRatio = (ReadStatusKb("VmHWM") - beforeWhole) * 1024.0 / largest;
        output.WriteLine($"reading each storage whole instead: {wholeRatio:F3} x the largest tensor");
        // Streaming holds one 16 MiB staging buffer and the zip reader's buffers, never a tensor's worth.
        Assert.True(ratio < 1.0, $"peak RSS grew by {ratio:F3} x the largest tensor");
        foreach (var d in destinations) d.Dispose();
    }

    /// <summary>A torch.save zip of float32 tensors (protocol-2 pickle of an OrderedDict through
    /// _rebuild_tensor_v2, one storage record per storage key), values (k % 97 - 48) * 1e-3 along each storage.</summary>
    private static void WriteTorchZip(string path, (string Name, string Storage)[] tensors, long elements)
    {
        var pickle = new List<byte> { 0x80, 2 };
        void Ascii(string s) => pickle.AddRange(Encoding.ASCII.GetBytes(s));
        void Text(string s) { pickle.Add((byte)'X'); pickle.AddRange(BitConverter.GetBytes(Encoding.UTF8.GetByteCount(s))); pickle.AddRange(Encoding.UTF8.GetBytes(s)); }
        void Int(long v) { pickle.Add((byte)'J'); pickle.AddRange(BitConverter.GetBytes((int)v)); }
        Ascii("ccollections\nOrderedDict\n)R");
        foreach (var (name, storage) in tensors)
        {
            Text(name);
            Ascii("ctorch._utils\n_rebuild_tensor_v2\n(");
            Ascii("(");
            Text("storage");
            Ascii("ctorch\nFloatStorage\n");
            Text(storage);
            Text("cpu");
            Int(elements);
            Ascii("tQ");
            Int(0);
            Ascii("(");
            Int(4096);
            Int(elements / 4096);
            Ascii("t(");
            Int(elements / 4096);
            Int(1);
            Ascii("t");
            pickle.Add(0x89);
            Ascii("ccollections\nOrderedDict\n)R");
            Ascii("tRs");
        }
        Ascii(".");
        using var zip = System.IO.Compression.ZipFile.Open(path, System.IO.Compression.ZipArchiveMode.Create);
        using (var entry = zip.CreateEntry("archive/data.pkl", System.IO.Compression.CompressionLevel.NoCompression).Open())
            entry.Write(pickle.ToArray());
        var pattern = new byte[1 << 20];
        for (int i = 0; i < pattern.Length / 4; i++)
            BitConverter.TryWriteBytes(pattern.AsSpan(4 * i), (i % 97 - 48) * 1e-3f);
        foreach (var storage in tensors.Select(t => t.Storage).Distinct())
        {
            using var entry = zip.CreateEntry($"archive/data/{storage}", System.IO.Compression.CompressionLevel.NoCompression).Open();
            for (long left = elements * 4; left > 0; left -= pattern.Length)
                entry.Write(pattern, 0, (int)Math.Min(pattern.Length, left));
        }
    }

    private static long ReadStatusKb(string field)
    {
        foreach (var line in File.ReadLines("/proc/self/status"))
            if (line.StartsWith(field + ":", StringComparison.Ordinal))
                return long.Parse(line[(field.Length + 1)..].Trim().Split(' ')[0]);
        throw new InvalidOperationException($"/proc/self/status has no {field}");
    }
}
