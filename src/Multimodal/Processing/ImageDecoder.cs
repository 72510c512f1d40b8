using System.Buffers.Binary;
using System.IO.Compression;
using SkiaSharp;

namespace Multimodal.Processing;

/// <summary>An image could not be decoded or is refused (too large, not an image, truncated).</summary>
public sealed class ImageDecodeException(string message, Exception? inner = null) : Exception(message, inner);

/// <summary>Decodes PNG, JPEG (baseline, progressive, CMYK), WebP, GIF and BMP — these and no other formats — with
/// SkiaSharp, whose output equals Pillow 9.4's for these formats, and 16-bit grey PNG by hand, where Skia keeps the high
/// byte but Pillow (mode "I") clips the value to 0..255. EXIF orientation and ICC profiles are ignored, as the upstream
/// processors ignore them.</summary>
/// <remarks>The header is read first (<see cref="ImageHeader"/>): the declared size is checked against the pixel limit in
/// 64-bit arithmetic before any codec or pixel buffer exists, so a tiny file that declares a huge image costs nothing.
/// A decode holds 4 bytes per pixel of RGBA (8 for 16-bit grey, which also keeps the samples); the default limit,
/// Pillow's 89 M pixels, therefore allows ~360 MB and several seconds for one image. Servers should set a lower limit
/// (the OpenAI server's default is <c>Multimodal:MaxImagePixels</c> = 12.6 M). Every failure is an
/// <see cref="ImageDecodeException"/> that names the format and says what is wrong: not an image, truncated, an invalid
/// header, an unsupported size or corrupt data.</remarks>
public static class ImageDecoder
{
    /// <summary>Pillow's <c>MAX_IMAGE_PIXELS</c>; larger images are refused (decompression bombs).</summary>
    public const long DefaultMaxPixels = 89_478_485;

    /// <summary>The largest image file <see cref="Decode(string, long)"/> reads (1 GiB).</summary>
    public const long MaxFileBytes = 1L << 30;

    /// <summary>Decodes a file.</summary>
    /// <exception cref="FileNotFoundException">the file does not exist.</exception>
    /// <exception cref="ImageDecodeException">the path is not a regular file with bytes in it (a directory, FIFO or
    /// device), the file is larger than <see cref="MaxFileBytes"/>, the bytes are not a decodable image, or it has more
    /// than <paramref name="maxPixels"/> pixels.</exception>
    public static DecodedImage Decode(string path, long maxPixels = DefaultMaxPixels) =>
        Decode(ReadImageFile(path, MaxFileBytes), path, maxPixels);

    /// <summary>Reads an image file's bytes without blocking on special files: FIFOs, sockets and character devices
    /// report no size, so anything that is not a regular file with bytes in it is refused before it is opened.</summary>
    /// <exception cref="FileNotFoundException">the file does not exist.</exception>
    /// <exception cref="ImageDecodeException">a directory, an empty or special file, or more than <paramref name="maxBytes"/>.</exception>
    public static byte[] ReadImageFile(string path, long maxBytes)
    {
        if (Directory.Exists(path)) throw new ImageDecodeException($"Image '{path}' is a directory, not an image file.");
        FileInfo? info;
        try { info = Common.FileTarget.Resolve(path); }
        catch (IOException e) { throw new ImageDecodeException($"Image '{path}' is a symbolic link that cannot be followed: {e.Message}"); }
        if (info is not { Exists: true }) throw new FileNotFoundException($"Image '{path}' does not exist.", path);
        if (info.Length == 0) throw new ImageDecodeException($"Image '{path}' is empty (0 bytes) or not a regular file.");
        if (info.Length > maxBytes) throw new ImageDecodeException($"Image '{path}' is {info.Length} bytes; at most {maxBytes} are read.");
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1, FileOptions.SequentialScan);
        var bytes = new byte[info.Length];
        int read = stream.ReadAtLeast(bytes, bytes.Length, throwOnEndOfStream: false);
        return read == bytes.Length ? bytes : bytes[..read];
    }

    /// <summary>Decodes encoded image bytes; <paramref name="name"/> names the image in errors.</summary>
    /// <exception cref="ImageDecodeException">not a decodable image of a supported format, or more than
    /// <paramref name="maxPixels"/> pixels.</exception>
    public static DecodedImage Decode(byte[] bytes, string name = "image", long maxPixels = DefaultMaxPixels)
    {
        ArgumentNullException.ThrowIfNull(bytes);
        var header = ImageHeader.Read(bytes, name);
        CheckSize(header.Width, header.Height, header.FormatName, name, maxPixels);
        try
        {
            return DecodeChecked(bytes, header, name, maxPixels);
        }
        catch (Exception e) when (e is not ImageDecodeException)
        {
            // A codec failure of any kind (a bounds check, a zlib error, an allocation) is this image's fault, never the caller's.
            throw new ImageDecodeException($"{name}: {header.FormatName} data is corrupt ({e.GetType().Name}: {e.Message})", e);
        }
    }

    /// <summary>Refuses a size over the pixel limit, or one whose RGBA buffer could not exist.</summary>
    private static void CheckSize(long width, long height, string format, string name, long maxPixels)
    {
        long pixels = width * height;   // both < 2^31: no overflow in 64 bits
        if (pixels > maxPixels)
            throw new ImageDecodeException(
                $"{name}: {format} of {width}x{height} = {pixels} pixels exceeds the limit of {maxPixels} (raise maxPixels if the image is trusted).");
        if (pixels > Array.MaxLength / 8)
            throw new ImageDecodeException($"{name}: {format} of {width}x{height} is an unsupported size (its pixels would not fit one buffer).");
    }

    private static unsafe DecodedImage DecodeChecked(byte[] bytes, ImageHeader header, string name, long maxPixels)
    {
        string format = header.FormatName;
        using var data = SKData.CreateCopy(bytes);
        using var stream = new SKMemoryStream(data);
        using var codec = SKCodec.Create(stream, out var status)
            ?? throw new ImageDecodeException(status == SKCodecResult.IncompleteInput
                ? $"{name}: {format} data is truncated."
                : $"{name}: {format} data is corrupt (the decoder refused it: {status}).");
        var info = codec.Info;
        if (info.Width <= 0 || info.Height <= 0)
            throw new ImageDecodeException($"{name}: {format} has no pixels ({info.Width}x{info.Height}).");
        if (info.Width != header.Width || info.Height != header.Height) CheckSize(info.Width, info.Height, format, name, maxPixels);

        string mode = ModeOf(header, codec);
        if (mode == "I" && !header.PngInterlaced) return DecodeGrey16Png(bytes, info.Width, info.Height, name);  // Adam7: Skia's high bytes

        var target = new SKImageInfo(info.Width, info.Height, SKColorType.Rgba8888, SKAlphaType.Unpremul);
        var pixels = new byte[checked((long)info.Width * info.Height * 4)];
        SKCodecResult result;
        fixed (byte* p = pixels) result = codec.GetPixels(target, (IntPtr)p);
        if (result != SKCodecResult.Success)
            throw new ImageDecodeException(result == SKCodecResult.IncompleteInput ? $"{name}: {format} data is truncated." : $"{name}: {format} data is corrupt ({result}).");
        return new DecodedImage(info.Width, info.Height, mode, pixels);
    }

    // The mode Pillow would open the file in: from the PNG header's colour type and depth, the JPEG
    // frame's component count, otherwise from whether the image has alpha.
    private static string ModeOf(ImageHeader header, SKCodec codec) => header.Format switch
    {
        ImageFormat.Png => header.PngColourType switch
        {
            0 => header.PngDepth == 16 ? "I" : "L",
            3 => "P",
            4 => "LA",
            6 => "RGBA",
            _ => "RGB",
        },
        ImageFormat.Jpeg => header.JpegComponents switch { 1 => "L", 4 => "CMYK", _ => "RGB" },
        ImageFormat.Gif => "P",
        _ => codec.Info.AlphaType == SKAlphaType.Opaque ? "RGB" : "RGBA",
    };

    // 16-bit grey PNG (non-interlaced): inflate the IDAT stream a row at a time, undo the per-row filters, clip each
    // big-endian sample to 0..255 as Pillow's I → RGB conversion does. Holds 8 bytes a pixel (RGBA and the samples).
    private static DecodedImage DecodeGrey16Png(byte[] png, int width, int height, string name)
    {
        using var idat = new MemoryStream();
        for (long pos = 8; pos + 8 <= png.Length;)
        {
            long length = BinaryPrimitives.ReadUInt32BigEndian(png.AsSpan((int)pos));
            if (pos + 12 + length > png.Length)
                throw new ImageDecodeException($"{name}: PNG is truncated: the chunk at byte {pos} declares {length} bytes, past the end of the data.");
            var type = png.AsSpan((int)pos + 4, 4);
            if (type.SequenceEqual("IDAT"u8)) idat.Write(png, (int)pos + 8, (int)length);
            if (type.SequenceEqual("IEND"u8)) break;
            pos += 12 + length;
        }
        idat.Position = 0;
        int stride = checked(width * 2);
        var rgba = new byte[checked((long)width * height * 4)];
        var samples = new int[checked((long)width * height)];
        var line = new byte[stride + 1];
        var previous = new byte[stride];
        var row = new byte[stride];
        using var z = new ZLibStream(idat, CompressionMode.Decompress);
        for (int y = 0; y < height; y++)
        {
            try { z.ReadExactly(line); }
            catch (Exception e)
            {
                throw new ImageDecodeException(e is EndOfStreamException
                    ? $"{name}: PNG data is truncated (row {y} of {height})."
                    : $"{name}: PNG data is corrupt (zlib: {e.Message})", e);
            }
            int filter = line[0];
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
                    _ => throw new ImageDecodeException($"{name}: PNG data is corrupt (row {y} has unknown filter type {filter})."),
                };
                row[x] = (byte)(line[x + 1] + predicted);
            }
            long o = (long)y * width;
            for (int x = 0; x < width; x++)
            {
                int v = (row[2 * x] << 8) | row[2 * x + 1];
                samples[o + x] = v;
                byte clipped = (byte)Math.Min(v, 255);
                long q = (o + x) * 4;
                rgba[q] = rgba[q + 1] = rgba[q + 2] = clipped;
                rgba[q + 3] = 255;
            }
            (previous, row) = (row, previous);
        }
        return new DecodedImage(width, height, "I", rgba, samples);
    }

    private static int Paeth(int a, int b, int c)
    {
        int p = a + b - c, pa = Math.Abs(p - a), pb = Math.Abs(p - b), pc = Math.Abs(p - c);
        return pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
    }
}
