using System.Buffers.Binary;

namespace Multimodal.Processing;

/// <summary>The image formats <see cref="ImageDecoder"/> decodes.</summary>
public enum ImageFormat
{
    /// <summary>PNG (any bit depth and colour type; 16-bit grey as Pillow's mode "I").</summary>
    Png,
    /// <summary>JPEG (baseline, progressive, grey, RGB, CMYK).</summary>
    Jpeg,
    /// <summary>WebP (lossy, lossless, extended; the first frame of an animation).</summary>
    WebP,
    /// <summary>GIF (the first frame).</summary>
    Gif,
    /// <summary>Windows BMP.</summary>
    Bmp,
}

/// <summary>What an encoded image's header declares: its format and size, read from the bytes alone (no codec, no pixel
/// buffer), so its decoding cost can be bounded before anything is allocated.</summary>
/// <param name="Format">the format, from the file's signature.</param>
/// <param name="Width">declared width in pixels.</param>
/// <param name="Height">declared height in pixels.</param>
public sealed record ImageHeader(ImageFormat Format, int Width, int Height)
{
    /// <summary>PNG: the bit depth per sample.</summary>
    internal int PngDepth { get; init; }

    /// <summary>PNG: the colour type (0 grey, 2 RGB, 3 palette, 4 grey + alpha, 6 RGBA).</summary>
    internal int PngColourType { get; init; }

    /// <summary>PNG: Adam7-interlaced.</summary>
    internal bool PngInterlaced { get; init; }

    /// <summary>JPEG: the frame's colour components (1 grey, 3 YCbCr, 4 CMYK).</summary>
    internal int JpegComponents { get; init; }

    /// <summary>Width × Height, in 64-bit arithmetic.</summary>
    public long Pixels => (long)Width * Height;

    /// <summary>Bytes a decode of this image holds at its peak: the 8-bit RGBA pixels, plus as much again for the
    /// processors' RGB copy and resampling passes (README, "Safe on a network").</summary>
    public long DecodeBytes => checked(Pixels * 8);

    /// <summary>The format's name as users know it.</summary>
    public string FormatName => Format switch
    {
        ImageFormat.Png => "PNG", ImageFormat.Jpeg => "JPEG", ImageFormat.WebP => "WebP", ImageFormat.Gif => "GIF", _ => "BMP",
    };

    private static ReadOnlySpan<byte> PngSignature => [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A];

    /// <summary>Reads the header of encoded image bytes.</summary>
    /// <param name="bytes">the encoded image.</param>
    /// <param name="name">names the image in errors.</param>
    /// <exception cref="ImageDecodeException">the bytes are not one of the <see cref="ImageFormat"/>s, end inside the
    /// header (truncated), or declare an invalid header (zero or negative sizes, impossible depth and colour type pairs,
    /// component counts a decoder cannot take).</exception>
    public static ImageHeader Read(ReadOnlySpan<byte> bytes, string name = "image")
    {
        if (bytes.Length == 0) throw new ImageDecodeException($"{name}: no bytes (an empty image).");
        if (bytes.StartsWith(PngSignature)) return Png(bytes, name);
        if (bytes.Length >= 3 && bytes[0] == 0xFF && bytes[1] == 0xD8 && bytes[2] == 0xFF) return Jpeg(bytes, name);
        if (bytes.StartsWith("GIF87a"u8) || bytes.StartsWith("GIF89a"u8)) return Gif(bytes, name);
        if (bytes.Length >= 12 && bytes.StartsWith("RIFF"u8) && bytes[8..12].SequenceEqual("WEBP"u8)) return WebP(bytes, name);
        if (bytes.StartsWith("BM"u8)) return Bmp(bytes, name);
        throw new ImageDecodeException($"{name}: not an image this library decodes (expected PNG, JPEG, WebP, GIF or BMP{Sniff(bytes)}).");
    }

    // Formats a codec would take but the library does not document: named, so the refusal is not mistaken for damage.
    private static string Sniff(ReadOnlySpan<byte> b) =>
        b.Length >= 4 && b[0] == 0 && b[1] == 0 && b[2] is 1 or 2 && b[3] == 0 ? "; this looks like an ICO/CUR icon"
        : b.Length >= 12 && b[4..8].SequenceEqual("ftyp"u8) ? "; this looks like HEIF/AVIF"
        : b.Length >= 4 && (b.StartsWith("II*\0"u8) || b.StartsWith("MM\0*"u8)) ? "; this looks like TIFF"
        : "";

    private static ImageDecodeException Truncated(string name, string format) => new($"{name}: {format} is truncated inside its header.");

    private static ImageDecodeException Invalid(string name, string format, string what) => new($"{name}: {format} has an invalid header: {what}.");

    private static ImageHeader Png(ReadOnlySpan<byte> b, string name)
    {
        if (b.Length < 33) throw Truncated(name, "PNG");
        if (BinaryPrimitives.ReadUInt32BigEndian(b[8..]) != 13 || !b[12..16].SequenceEqual("IHDR"u8))
            throw Invalid(name, "PNG", "the first chunk is not a 13-byte IHDR");
        uint width = BinaryPrimitives.ReadUInt32BigEndian(b[16..]), height = BinaryPrimitives.ReadUInt32BigEndian(b[20..]);
        int depth = b[24], colourType = b[25];
        if (width == 0 || height == 0 || width > int.MaxValue || height > int.MaxValue)
            throw Invalid(name, "PNG", $"size {width}x{height} (each side must be 1 to 2^31-1)");
        bool valid = colourType switch
        {
            0 => depth is 1 or 2 or 4 or 8 or 16,
            2 or 4 or 6 => depth is 8 or 16,
            3 => depth is 1 or 2 or 4 or 8,
            _ => false,
        };
        if (!valid) throw Invalid(name, "PNG", $"bit depth {depth} with colour type {colourType}");
        if (b[26] != 0 || b[27] != 0 || b[28] > 1)
            throw Invalid(name, "PNG", $"compression {b[26]}, filter {b[27]}, interlace {b[28]} (expected 0, 0, 0 or 1)");
        return new ImageHeader(ImageFormat.Png, (int)width, (int)height) { PngDepth = depth, PngColourType = colourType, PngInterlaced = b[28] == 1 };
    }

    private static ImageHeader Jpeg(ReadOnlySpan<byte> b, string name)
    {
        // Markers up to the first frame header (SOF); fill bytes (0xFF runs) and parameterless markers are skipped.
        long i = 2;
        while (true)
        {
            if (i + 4 > b.Length) throw Truncated(name, "JPEG");
            if (b[(int)i] != 0xFF) throw Invalid(name, "JPEG", $"byte {i} is not a marker");
            byte marker = b[(int)i + 1];
            if (marker == 0xFF) { i++; continue; }
            if (marker is 0x01 or >= 0xD0 and <= 0xD7) { i += 2; continue; }
            if (marker is 0xD9 or 0xDA) throw Invalid(name, "JPEG", "the scan starts before any frame header (no SOF marker)");
            int length = BinaryPrimitives.ReadUInt16BigEndian(b[(int)(i + 2)..]);
            if (length < 2) throw Invalid(name, "JPEG", $"marker 0x{marker:X2} has length {length}");
            bool sof = marker is >= 0xC0 and <= 0xCF && marker is not (0xC4 or 0xC8 or 0xCC);
            if (sof)
            {
                if (i + 10 > b.Length) throw Truncated(name, "JPEG");
                int height = BinaryPrimitives.ReadUInt16BigEndian(b[(int)(i + 5)..]), width = BinaryPrimitives.ReadUInt16BigEndian(b[(int)(i + 7)..]);
                int components = b[(int)i + 9];
                if (width == 0 || height == 0) throw Invalid(name, "JPEG", $"frame size {width}x{height}");
                if (components is not (1 or 3 or 4)) throw Invalid(name, "JPEG", $"{components} colour components (expected 1, 3 or 4)");
                if (length != 8 + 3 * components) throw Invalid(name, "JPEG", $"frame header length {length} for {components} components");
                return new ImageHeader(ImageFormat.Jpeg, width, height) { JpegComponents = components };
            }
            i += 2 + length;
        }
    }

    private static ImageHeader Gif(ReadOnlySpan<byte> b, string name)
    {
        if (b.Length < 13) throw Truncated(name, "GIF");
        int width = BinaryPrimitives.ReadUInt16LittleEndian(b[6..]), height = BinaryPrimitives.ReadUInt16LittleEndian(b[8..]);
        if (width == 0 || height == 0) throw Invalid(name, "GIF", $"screen size {width}x{height}");
        return new ImageHeader(ImageFormat.Gif, width, height);
    }

    private static ImageHeader WebP(ReadOnlySpan<byte> b, string name)
    {
        if (b.Length < 30) throw Truncated(name, "WebP");
        long riff = BinaryPrimitives.ReadUInt32LittleEndian(b[4..]);
        if (riff < 4 || riff % 2 == 1) throw Invalid(name, "WebP", $"RIFF size {riff}");
        if (riff + 8 > b.Length) throw new ImageDecodeException($"{name}: WebP is truncated: its RIFF header declares {riff + 8} bytes, the data has {b.Length}.");
        var chunk = b[12..16];
        int width, height;
        if (chunk.SequenceEqual("VP8X"u8))
        {
            width = 1 + (b[24] | b[25] << 8 | b[26] << 16);
            height = 1 + (b[27] | b[28] << 8 | b[29] << 16);
        }
        else if (chunk.SequenceEqual("VP8L"u8))
        {
            if (b[20] != 0x2F) throw Invalid(name, "WebP", "the lossless bitstream has no 0x2F signature");
            uint bits = BinaryPrimitives.ReadUInt32LittleEndian(b[21..]);
            width = 1 + (int)(bits & 0x3FFF);
            height = 1 + (int)((bits >> 14) & 0x3FFF);
        }
        else if (chunk.SequenceEqual("VP8 "u8))
        {
            if (b[23] != 0x9D || b[24] != 0x01 || b[25] != 0x2A) throw Invalid(name, "WebP", "the lossy bitstream has no start code");
            width = BinaryPrimitives.ReadUInt16LittleEndian(b[26..]) & 0x3FFF;
            height = BinaryPrimitives.ReadUInt16LittleEndian(b[28..]) & 0x3FFF;
            if (width == 0 || height == 0) throw Invalid(name, "WebP", $"frame size {width}x{height}");
        }
        else throw Invalid(name, "WebP", $"first chunk '{System.Text.Encoding.ASCII.GetString(chunk)}' (expected VP8, VP8L or VP8X)");
        return new ImageHeader(ImageFormat.WebP, width, height);
    }

    private static ImageHeader Bmp(ReadOnlySpan<byte> b, string name)
    {
        if (b.Length < 26) throw Truncated(name, "BMP");
        uint dib = BinaryPrimitives.ReadUInt32LittleEndian(b[14..]);
        long width, height;
        if (dib == 12)
        {
            width = BinaryPrimitives.ReadUInt16LittleEndian(b[18..]);
            height = BinaryPrimitives.ReadUInt16LittleEndian(b[20..]);
        }
        else if (dib is 16 or 40 or 52 or 56 or 64 or 108 or 124)
        {
            width = BinaryPrimitives.ReadInt32LittleEndian(b[18..]);
            height = Math.Abs((long)BinaryPrimitives.ReadInt32LittleEndian(b[22..]));   // negative: rows top-down
        }
        else throw Invalid(name, "BMP", $"DIB header size {dib}");
        if (width <= 0 || height <= 0 || height > int.MaxValue) throw Invalid(name, "BMP", $"size {width}x{height}");
        return new ImageHeader(ImageFormat.Bmp, (int)width, (int)height);
    }
}
