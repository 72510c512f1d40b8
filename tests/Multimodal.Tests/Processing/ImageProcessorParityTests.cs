using System.IO.Compression;
using System.Security.Cryptography;
using System.Text.Json;
using Multimodal.Loading;
using Multimodal.Processing;
using Multimodal.Tests.TestSupport;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace Multimodal.Tests.Processing;

/// <summary>BLIP-2's image processor against the pixels transformers 4.45.1 + Pillow 9.4 produce for 23
/// images (Preprocess/README.md): uint8 pixels equal, float32 output bit-identical.</summary>
public sealed class ImageProcessorParityTests(ITestOutputHelper output)
{
    private static readonly string Images = Path.Combine(AppContext.BaseDirectory, "Images");
    private static readonly string Preprocess = Path.Combine(AppContext.BaseDirectory, "Preprocess");
    private static readonly Lazy<JsonElement> Manifest = new(() =>
        JsonDocument.Parse(File.ReadAllText(Path.Combine(Preprocess, "manifest.json"))).RootElement.Clone());

    /// <summary>Each upstream processor of the fixtures: its uint8 step and its float output.</summary>
    private static readonly Dictionary<string, Func<(Func<DecodedImage, byte[]> Bytes, Func<DecodedImage, Tensor> Floats)>> Processors = new()
    {
        ["blip2_224"] = () => Blip("blip2-opt-2.7b"),
        ["blip2_364"] = () => Blip("blip2-opt-6.7b-coco"),
        ["openclip_224"] = () =>
        {
            var p = new OpenClipImageProcessor(224);
            return (p.ResizeToBytes, i => p.Preprocess([i]));
        },
        ["idefics_224"] = () =>
        {
            var p = IdeficsImageProcessor.FromFolder(Path.Combine(Preprocess, "configs", "idefics-9b"));
            return (p.ResizeToBytes, i => p.Preprocess([i]));
        },
    };

    private static (Func<DecodedImage, byte[]>, Func<DecodedImage, Tensor>) Blip(string config)
    {
        var p = BlipImageProcessor.FromFolder(Path.Combine(Preprocess, "configs", config));
        return (p.ResizeToBytes, i => p.Preprocess([i]));
    }

    // Skia cannot hand out CMYK planes, so open_clip's CMYK-space resize is approximated (README §7).
    private static bool Approximate(string processor, string stem) => processor == "openclip_224" && stem == "cmyk_q90";

    public static TheoryData<string, string> Cases()
    {
        var data = new TheoryData<string, string>();
        foreach (var processor in Processors.Keys)
            foreach (var image in Manifest.Value.GetProperty("images").EnumerateObject())
                data.Add(processor, image.Name);
        return data;
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void Pixels_equal_the_upstream_processor(string processorName, string stem)
    {
        var entry = Manifest.Value.GetProperty("images").GetProperty(stem);
        var expected = entry.GetProperty("processors").GetProperty(processorName);
        var (bytes, floatsOf) = Processors[processorName]();
        var image = ImageDecoder.Decode(Path.Combine(Images, entry.GetProperty("file").GetString()!));
        Assert.Equal(entry.GetProperty("pil_mode").GetString(), image.Mode);

        var u8 = bytes(image);
        if (Approximate(processorName, stem))
        {
            using var stored = GzSafetensors.Read(Path.Combine(Preprocess, expected.GetProperty("file").GetString()!), expected.GetProperty("tensor").GetString()!);
            using var lutTable = GzSafetensors.Read(Path.Combine(Preprocess, "normalize_lut.safetensors.gz"), processorName);
            var reference = stored.data<byte>().ToArray();
            var levels = lutTable.data<float>().ToArray();
            int planeSize = u8.Length / 3;
            var errors = u8.Select((v, i) => (double)Math.Abs(levels[(i / planeSize) * 256 + v] - levels[(i / planeSize) * 256 + reference[i]])).ToArray();
            double mean = errors.Average(), max = errors.Max();
            output.WriteLine($"{processorName}/{stem}: approximate (CMYK resized as RGB): mean {mean:F4}, max {max:F4} normalised units (bounds 0.01 / 0.2)");
            Assert.True(mean <= 0.01 && max <= 0.2);
            return;
        }
        if (expected.TryGetProperty("file", out var file))
        {
            using var stored = GzSafetensors.Read(Path.Combine(Preprocess, file.GetString()!), expected.GetProperty("tensor").GetString()!);
            var reference = stored.data<byte>().ToArray();
            int differing = reference.Zip(u8, (a, b) => a != b ? 1 : 0).Sum();
            int maxDiff = reference.Zip(u8, (a, b) => Math.Abs(a - b)).Max();
            output.WriteLine($"{processorName}/{stem}: {differing} of {u8.Length} uint8 values differ (max {maxDiff} levels)");
            Assert.Equal(0, differing);
        }
        Assert.Equal(expected.GetProperty("sha256_u8_chw").GetString(), Sha256(u8));

        using var pixels = floatsOf(image);
        var floats = pixels.data<float>().ToArray();
        var floatBytes = new byte[floats.Length * 4];
        Buffer.BlockCopy(floats, 0, floatBytes, 0, floatBytes.Length);
        Assert.Equal(expected.GetProperty("sha256_f32_chw").GetString(), Sha256(floatBytes));

        using var lut = GzSafetensors.Read(Path.Combine(Preprocess, "normalize_lut.safetensors.gz"), processorName);
        var table = lut.data<float>().ToArray();
        int plane = u8.Length / 3;
        double maxError = 0;
        for (int i = 0; i < u8.Length; i++)
            maxError = Math.Max(maxError, Math.Abs(floats[i] - table[(i / plane) * 256 + u8[i]]));
        output.WriteLine($"{processorName}/{stem}: float32 max abs error vs upstream {maxError:E2}; sha256 of u8 and f32 equal");
        Assert.True(maxError <= 1e-5);
    }

    [Fact]
    public void Bicubic_coefficients_equal_pillows_worked_values()
    {
        var (start, count, weights, ksize) = PillowResample.Coefficients(400, 224, ResampleFilter.Bicubic);
        Assert.Equal(0, start[0]);
        Assert.Equal([2252685, 1938014, 172418, -168813], weights.Skip(0).Take(count[0]));
        Assert.Equal(176, start[100]);
        Assert.Equal([-89091, -94584, 1184514, 2333108, 1054833, -120909, -73566], weights.Skip(100 * ksize).Take(count[100]));
        (start, count, weights, ksize) = PillowResample.Coefficients(7, 224, ResampleFilter.Bicubic);
        Assert.Equal([4714146, -519842], weights.Take(count[0]));
        Assert.Equal(1, start[111]);
        Assert.Equal([-504, 34792, 4191768, -31752], weights.Skip(111 * ksize).Take(count[111]));
    }

    [Fact]
    public void Bytes_that_are_not_an_image_are_refused_clearly()
    {
        var e = Assert.Throws<ImageDecodeException>(() => ImageDecoder.Decode("not an image at all"u8.ToArray(), "notes.txt"));
        Assert.Contains("notes.txt", e.Message);
        var png = File.ReadAllBytes(Path.Combine(Images, "chelsea.png"));
        Assert.Throws<ImageDecodeException>(() => ImageDecoder.Decode(png[..(png.Length / 2)], "half.png"));
        Assert.Throws<FileNotFoundException>(() => ImageDecoder.Decode(Path.Combine(Images, "missing.png")));
    }

    [Fact]
    public void Images_above_the_pixel_limit_are_refused_before_decoding()
    {
        var e = Assert.Throws<ImageDecodeException>(() => ImageDecoder.Decode(Path.Combine(Images, "chelsea.png"), maxPixels: 1000));
        output.WriteLine(e.Message);
        Assert.Contains("400x266", e.Message);
    }

    private static string Sha256(byte[] bytes) => Convert.ToHexStringLower(SHA256.HashData(bytes));
}

/// <summary>Reads one tensor of a gzip-wrapped safetensors file (the preprocess fixtures' container).</summary>
internal static class GzSafetensors
{
    public static Tensor Read(string path, string name)
    {
        string temp = Path.GetTempFileName();
        try
        {
            using (var gz = new GZipStream(File.OpenRead(path), CompressionMode.Decompress))
            using (var file = File.Create(temp))
                gz.CopyTo(file);
            using var reader = SafetensorsFile.Open(temp);
            return reader.Read(name);
        }
        finally
        {
            File.Delete(temp);
        }
    }
}
