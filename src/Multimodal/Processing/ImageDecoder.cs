using System.Buffers.Binary;
using System.IO.Compression;
using SkiaSharp;

namespace Multimodal.Processing;

/// <summary>An image could not be decoded or is refused (too large, not an image, truncated).</summary>
public sealed class ImageDecodeException(string message, Exception? inner = null) : Exception(message, inner);

/// <summary>Decodes PNG, JPEG (baseline, progressive, CMYK), WebP, GIF and BMP with SkiaSharp, whose
/// output equals Pillow 9.4's for these formats, and 16-bit grey PNG by hand, where Skia keeps the high
/// byte but Pillow (mode "I") clips the value to 0..255. EXIF orientation and ICC profiles are ignored,
/// as the upstream processors ignore them.</summary>
public static class ImageDecoder
{
    /// <summary>Pillow's <c>MAX_IMAGE_PIXELS</c>; larger images are refused (decompression bombs).</summary>
    public const long DefaultMaxPixels = 89_478_485;

    /// <summary>Decodes a file.</summary>
    /// <exception cref="FileNotFoundException">the file does not exist.</exception>
    /// <exception cref="ImageDecodeException">the bytes are not a decodable image, or it has more than
    /// <paramref name="maxPixels"/> pixels.</exception>
    public static DecodedImage Decode(string path, long maxPixels = DefaultMaxPixels)
    {
        if (Directory.Exists(path)) throw new ImageDecodeException($"Image '{path}' is a directory, not an image file.");
        if (!File.Exists(path)) throw new FileNotFoundException($"Image '{path}' does not exist.", path);
        var bytes = File.ReadAllBytes(path);
        if (bytes.Length == 0) throw new ImageDecodeException($"Image '{path}' is empty (0 bytes).");
        return Decode(bytes, path, maxPixels);
    }

    /// <summary>Decodes encoded image bytes; <paramref name="name"/> names the image in errors.</summary>
    public static unsafe DecodedImage Decode(byte[] bytes, string name = "image", long maxPixels = DefaultMaxPixels)
    {
        ArgumentNullException.ThrowIfNull(bytes);
        using var data = SKData.CreateCopy(bytes);
        using var stream = new SKMemoryStream(data);
        using var codec = SKCodec.Create(stream, out var status)
            ?? throw new ImageDecodeException(bytes.Length == 0 ? $"{name}: no bytes (an empty image)."
                : status == SKCodecResult.IncompleteInput ? $"{name}: the image data is truncated."
                : $"{name}: not an image this library decodes (expected PNG, JPEG, WebP, GIF or BMP).");
        var info = codec.Info;
        if (info.Width <= 0 || info.Height <= 0)
            throw new ImageDecodeException($"{name}: the image has no pixels ({info.Width}x{info.Height}).");
        if ((long)info.Width * info.Height > maxPixels)
            throw new ImageDecodeException(
                $"{name}: {info.Width}x{info.Height} = {(long)info.Width * info.Height} pixels exceeds the limit of {maxPixels} (raise maxPixels if the image is trusted).");

        string mode = ModeOf(bytes, codec);
        if (mode == "I" && TryDecodeGrey16Png(bytes, out var grey)) return grey;

        var target = new SKImageInfo(info.Width, info.Height, SKColorType.Rgba8888, SKAlphaType.Unpremul);
        var pixels = new byte[info.Width * info.Height * 4];
        SKCodecResult result;
        fixed (byte* p = pixels) result = codec.GetPixels(target, (IntPtr)p);
        if (result != SKCodecResult.Success)
            throw new ImageDecodeException(result == SKCodecResult.IncompleteInput ? $"{name}: the image data is truncated." : $"{name}: the image data is corrupt.");
        return new DecodedImage(info.Width, info.Height, mode, pixels);
    }

    // The mode Pillow would open the file in: from the PNG header's colour type and depth, the JPEG
    // frame's component count, otherwise from whether the image has alpha.
    private static string ModeOf(byte[] bytes, SKCodec codec)
    {
        if (codec.EncodedFormat == SKEncodedImageFormat.Png && bytes.Length >= 33)
        {
            int depth = bytes[24], colourType = bytes[25];
            return colourType switch
            {
                0 => depth == 16 ? "I" : "L",
                2 => "RGB",
                3 => "P",
                4 => "LA",
                6 => "RGBA",
                _ => "RGB",
            };
        }
        if (codec.EncodedFormat == SKEncodedImageFormat.Jpeg)
            return JpegComponents(bytes) switch { 1 => "L", 4 => "CMYK", _ => "RGB" };
        if (codec.EncodedFormat == SKEncodedImageFormat.Gif) return "P";
        return codec.Info.AlphaType == SKAlphaType.Opaque ? "RGB" : "RGBA";
    }

    private static int JpegComponents(byte[] b)
    {
        int i = 2;
        while (i + 9 < b.Length && b[i] == 0xFF)
        {
            byte marker = b[i + 1];
            int length = (b[i + 2] << 8) | b[i + 3];
            bool sof = marker is >= 0xC0 and <= 0xCF && marker is not (0xC4 or 0xC8 or 0xCC);
            if (sof) return b[i + 9];
            i += 2 + length;
        }
        return 3;
    }

    // 16-bit grey PNG (non-interlaced): inflate the IDAT stream, undo the per-row filters, clip each
    // big-endian sample to 0..255 as Pillow's I → RGB conversion does.
    private static bool TryDecodeGrey16Png(byte[] png, out DecodedImage image)
    {
        image = null!;
        int width = BinaryPrimitives.ReadInt32BigEndian(png.AsSpan(16));
        int height = BinaryPrimitives.ReadInt32BigEndian(png.AsSpan(20));
        if (png[28] != 0) return false; // Adam7 interlacing: Skia's high-byte decode is used instead
        using var idat = new MemoryStream();
        for (int pos = 8; pos + 8 <= png.Length;)
        {
            int length = BinaryPrimitives.ReadInt32BigEndian(png.AsSpan(pos));
            string type = System.Text.Encoding.ASCII.GetString(png, pos + 4, 4);
            if (length < 0 || pos + 12 + length > png.Length) throw new ImageDecodeException("PNG chunk runs past the end of the file.");
            if (type == "IDAT") idat.Write(png, pos + 8, length);
            if (type == "IEND") break;
            pos += 12 + length;
        }
        idat.Position = 0;
        int stride = width * 2;
        var raw = new byte[(stride + 1) * height];
        using (var z = new ZLibStream(idat, CompressionMode.Decompress))
        {
            try { z.ReadExactly(raw); }
            catch (Exception e) when (e is EndOfStreamException or InvalidDataException)
            {
                throw new ImageDecodeException("16-bit grey PNG: the image data is truncated or corrupt.", e);
            }
        }
        var previous = new byte[stride];
        var row = new byte[stride];
        var rgba = new byte[width * height * 4];
        var samples = new int[width * height];
        for (int y = 0; y < height; y++)
        {
            int filter = raw[y * (stride + 1)];
            var line = raw.AsSpan(y * (stride + 1) + 1, stride);
            for (int x = 0; x < stride; x++)
            {
                int a = x >= 2 ? row[x - 2] : 0, b = previous[x], c = x >= 2 ? previous[x - 2] : 0;
                int predicted = filter switch
                {
                    0 => 0,
                    1 => a,
                    2 => b,
                    3 => (a + b) >> 1,
                    4 => Paeth(a, b, c),
                    _ => throw new ImageDecodeException($"PNG row {y} has unknown filter type {filter}."),
                };
                row[x] = (byte)(line[x] + predicted);
            }
            for (int x = 0; x < width; x++)
            {
                int v = (row[2 * x] << 8) | row[2 * x + 1];
                samples[y * width + x] = v;
                byte clipped = (byte)Math.Min(v, 255);
                int o = (y * width + x) * 4;
                rgba[o] = rgba[o + 1] = rgba[o + 2] = clipped;
                rgba[o + 3] = 255;
            }
            (previous, row) = (row, previous);
        }
        image = new DecodedImage(width, height, "I", rgba, samples);
        return true;
    }

    private static int Paeth(int a, int b, int c)
    {
        int p = a + b - c, pa = Math.Abs(p - a), pb = Math.Abs(p - b), pc = Math.Abs(p - c);
        return pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
    }
}
