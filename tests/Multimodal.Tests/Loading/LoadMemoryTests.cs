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

    private static long ReadStatusKb(string field)
    {
        foreach (var line in File.ReadLines("/proc/self/status"))
            if (line.StartsWith(field + ":", StringComparison.Ordinal))
                return long.Parse(line[(field.Length + 1)..].Trim().Split(' ')[0]);
        throw new InvalidOperationException($"/proc/self/status has no {field}");
    }
}
