using System.Text.Json;

namespace Multimodal.Processing;

/// <summary>Shared last steps of the CLIP-style processors: channels first, and a per-(channel, level)
/// table of the float output, which is exact because every output value depends only on those two.</summary>
internal static class PixelTable
{
    /// <summary>transformers: f32(u8 · rescale) in double, then (f − f32(mean)) / f32(std) in float32.</summary>
    public static float[,] Transformers(double rescale, double[] mean, double[] std) =>
        Build((v, c) => ((float)(v * rescale) - (float)mean[c]) / (float)std[c]);

    /// <summary>torchvision: f32(u8) / 255 in float32, then (f − mean) / std in float32.</summary>
    public static float[,] Torchvision(double[] mean, double[] std) =>
        Build((v, c) => ((float)v / 255f - (float)mean[c]) / (float)std[c]);

    private static float[,] Build(Func<int, int, float> f)
    {
        var table = new float[3, 256];
        for (int c = 0; c < 3; c++)
            for (int v = 0; v < 256; v++)
                table[c, v] = f(v, c);
        return table;
    }

    public static byte[] ToChw(byte[] rgb, int pixels)
    {
        var chw = new byte[checked(3 * pixels)];
        for (int i = 0; i < pixels; i++)
            for (int c = 0; c < 3; c++)
                chw[c * pixels + i] = rgb[i * 3 + c];
        return chw;
    }

    /// <summary>(B, 3, H, W) float32 from channels-first bytes.</summary>
    public static Tensor ToTensor(IReadOnlyList<byte[]> chw, int height, int width, float[,] table)
    {
        int plane = checked(height * width);
        var values = new float[checked(chw.Count * 3 * plane)];
        for (int b = 0; b < chw.Count; b++)
            for (int c = 0; c < 3; c++)
                for (int i = 0; i < plane; i++)
                    values[(b * 3 + c) * plane + i] = table[c, chw[b][c * plane + i]];
        return tensor(values, [chw.Count, 3, height, width]);
    }

    public static double[] OpenAiMean => [0.48145466, 0.4578275, 0.40821073];
    public static double[] OpenAiStd => [0.26862954, 0.26130258, 0.27577711];
}

/// <summary>open_clip v2.20 <c>image_transform(size, is_train=False)</c>, OpenFlamingo's image processor:
/// torchvision <c>Resize(size, BICUBIC)</c> of the shortest side on the image in its own Pillow mode
/// (palette images NEAREST, RGBA premultiplied, 16-bit grey in 32-bit), <c>CenterCrop(size)</c>,
/// <c>convert("RGB")</c>, <c>ToTensor</c>, <c>Normalize</c> with the OpenAI CLIP mean and std.</summary>
/// <remarks>CMYK JPEGs: Skia hands out RGB only, so the image is converted before resizing instead of
/// after; the result differs from upstream by a few levels (see the preprocess fixtures' README).</remarks>
public sealed class OpenClipImageProcessor(int size = 224, double[]? mean = null, double[]? std = null)
{
    private readonly float[,] _table = PixelTable.Torchvision(mean ?? PixelTable.OpenAiMean, std ?? PixelTable.OpenAiStd);

    /// <summary>Output size (square).</summary>
    public int Size { get; } = size;

    /// <summary>The uint8 pixels before ToTensor, (3, size, size) channels first.</summary>
    public byte[] ResizeToBytes(DecodedImage image)
    {
        int w = image.Width, h = image.Height;
        // torchvision 0.14 Resize(int): shortest side → size, long side → int(size · long / short) (truncated). A very
        // elongated image resizes to more pixels than it had: bounded by the decoder's limit before any buffer exists.
        long longSide = (long)((double)Size * Math.Max(w, h) / Math.Min(w, h));
        if (longSide * Size > ImageDecoder.DefaultMaxPixels)
            throw new ArgumentException($"A {w}x{h} image resizes to {Size}x{longSide} before its center crop, more than " +
                                        $"{ImageDecoder.DefaultMaxPixels} pixels.", nameof(image));
        int newW = w <= h ? Size : (int)longSide;
        int newH = w <= h ? (int)longSide : Size;
        int top = (int)Math.Round((newH - Size) / 2.0), left = (int)Math.Round((newW - Size) / 2.0); // half to even, as Python
        byte[] rgb;
        if (image.Mode == "I" && image.Gray16 is int[] samples)
        {
            var resized = newW == w && newH == h ? samples : PillowResample.ResizeInt32(samples, w, h, newW, newH, ResampleFilter.Bicubic);
            rgb = new byte[checked(newW * newH * 3)];
            for (int i = 0; i < resized.Length; i++)
                rgb[3 * i] = rgb[3 * i + 1] = rgb[3 * i + 2] = (byte)Math.Clamp(resized[i], 0, 255);
        }
        else if (image.Mode is "RGBA" or "LA")
        {
            var premultiplied = (byte[])image.Rgba.Clone();
            for (int i = 0; i < premultiplied.Length; i += 4)
                for (int c = 0; c < 3; c++) premultiplied[i + c] = MulDiv255(premultiplied[i + c], premultiplied[i + 3]);
            var resized = newW == w && newH == h ? premultiplied : PillowResample.Resize(premultiplied, w, h, 4, newW, newH, ResampleFilter.Bicubic);
            rgb = new byte[checked(newW * newH * 3)];
            for (int i = 0, j = 0; j < resized.Length; i += 3, j += 4)
            {
                int a = resized[j + 3];
                for (int c = 0; c < 3; c++)
                    rgb[i + c] = a is 0 or 255 ? resized[j + c] : (byte)Math.Min(255, 255 * resized[j + c] / a);
            }
        }
        else
        {
            // Palette images are resized NEAREST by Pillow; copying palette entries commutes with it.
            var filter = image.Mode == "P" ? ResampleFilter.Nearest : ResampleFilter.Bicubic;
            var source = image.ToRgb();
            rgb = newW == w && newH == h ? source : PillowResample.Resize(source, w, h, 3, newW, newH, filter);
        }
        var cropped = new byte[checked(Size * Size * 3)];
        for (int y = 0; y < Size; y++)
            Buffer.BlockCopy(rgb, ((top + y) * newW + left) * 3, cropped, y * Size * 3, Size * 3);
        return PixelTable.ToChw(cropped, Size * Size);
    }

    /// <summary>(B, 3, size, size) float32 pixel values.</summary>
    public Tensor Preprocess(IReadOnlyList<DecodedImage> images) =>
        PixelTable.ToTensor(images.Select(ResizeToBytes).ToList(), Size, Size, _table);

    private static byte MulDiv255(int a, int b)
    {
        int t = a * b + 128;
        return (byte)(((t >> 8) + t) >> 8);
    }
}

/// <summary>transformers v4.45.1 <c>IdeficsImageProcessor</c> (inference path): IDEFICS' <c>convert_to_rgb</c>
/// (transparency composited over white), resize to exactly <c>image_size</c> bicubic, rescale by 1/255,
/// normalize, channels first.</summary>
public sealed class IdeficsImageProcessor
{
    private readonly float[,] _table;

    /// <summary>Output size (square).</summary>
    public int ImageSize { get; }

    /// <summary>Creates the processor.</summary>
    public IdeficsImageProcessor(int imageSize = 224, double[]? mean = null, double[]? std = null)
    {
        ImageSize = imageSize;
        _table = PixelTable.Transformers(1 / 255.0, mean ?? PixelTable.OpenAiMean, std ?? PixelTable.OpenAiStd);
    }

    /// <summary>Reads <c>preprocessor_config.json</c> (<c>image_size</c>, <c>image_mean</c>, <c>image_std</c>).</summary>
    public static IdeficsImageProcessor FromFolder(string folder)
    {
        string path = Path.Combine(folder, "preprocessor_config.json");
        if (!File.Exists(path)) throw new FileNotFoundException($"'{folder}' has no preprocessor_config.json.", path);
        using var doc = JsonDocument.Parse(File.ReadAllText(path));
        var root = doc.RootElement;
        int size = root.TryGetProperty("image_size", out var s) ? s.GetInt32() : 224;
        double[]? Values(string key) => root.TryGetProperty(key, out var v) ? v.EnumerateArray().Select(x => x.GetDouble()).ToArray() : null;
        return new IdeficsImageProcessor(size, Values("image_mean"), Values("image_std"));
    }

    /// <summary>The uint8 pixels before rescaling, (3, size, size) channels first.</summary>
    public byte[] ResizeToBytes(DecodedImage image)
    {
        var resized = PillowResample.Resize(image.ToRgbOverWhite(), image.Width, image.Height, 3, ImageSize, ImageSize, ResampleFilter.Bicubic);
        return PixelTable.ToChw(resized, ImageSize * ImageSize);
    }

    /// <summary>(B, 3, size, size) float32 pixel values.</summary>
    public Tensor Preprocess(IReadOnlyList<DecodedImage> images) =>
        PixelTable.ToTensor(images.Select(ResizeToBytes).ToList(), ImageSize, ImageSize, _table);
}
