using System.Buffers.Binary;
using System.IO.Compression;
using System.Text;

namespace Multimodal.Tests.TestSupport;

/// <summary>Damaged and hostile images made byte by byte, each with a fragment of the message the decoder must give:
/// declared sizes that overflow 32-bit arithmetic, chunk lengths near 2^31, a zlib stream asking for a preset
/// dictionary, invalid headers of every format, lies about sizes, truncations, formats the library does not document.</summary>
public static class HostileImages
{
    /// <summary>One hostile file: its name, bytes and a fragment of the expected message.</summary>
    public sealed record Case(string Name, byte[] Bytes, string Expected)
    {
        public override string ToString() => Name;
    }

    /// <summary>The corpus. Each decodes to an <c>ImageDecodeException</c> under a limit of <paramref name="maxPixels"/>.</summary>
    public static IReadOnlyList<Case> All() =>
    [
        new("png-32769x32768-rgba", Png(32769, 32768, 8, 6, Deflate(new byte[64])), "unsupported size"),
        new("png-32768x32768-rgba", Png(32768, 32768, 8, 6, Deflate(new byte[64])), "unsupported size"),
        new("png-23171x23171-rgba", Png(23171, 23171, 8, 6, Deflate(new byte[64])), "unsupported size"),
        new("png-depth-0", Png(4, 4, 0, 2, Deflate(new byte[64])), "invalid header: bit depth 0 with colour type 2"),
        new("png-depth-16-palette", Png(4, 4, 16, 3, Deflate(new byte[64])), "invalid header: bit depth 16 with colour type 3"),
        new("png-width-0", Png(0, 4, 8, 0, Deflate(new byte[64])), "invalid header: size 0x4"),
        new("png-height-over-2^31", Png(4, unchecked((int)0x80000001), 8, 0, Deflate(new byte[64])), "invalid header"),
        new("png-cut-in-header", Png(4, 4, 8, 0, Deflate(new byte[20]))[..20], "truncated inside its header"),
        new("png-cut-in-data", Truncate(Png(64, 64, 8, 2, Deflate(new byte[64 * (64 * 3 + 1)]))), "truncated"),
        new("png16-chunk-length-near-2^31", Grey16WithChunk(0x7FFFFFF0), "declares 2147483632 bytes, past the end of the data"),
        new("png16-chunk-length-2^32-1", Grey16WithChunk(0xFFFFFFFF), "declares 4294967295 bytes, past the end"),
        new("png16-zlib-preset-dictionary", Png(8, 8, 16, 0, [0x78, 0xBB, 0, 0, 0, 0, 0x03, 0x00]), "PNG data is corrupt"),
        new("png16-rows-missing", Png(8, 8, 16, 0, Deflate(new byte[3 * 17])), "PNG data is truncated (row 3 of 8)"),
        new("png16-bad-filter", Png(2, 2, 16, 0, Deflate([9, 0, 0, 0, 0, 9, 0, 0, 0, 0])), "unknown filter type 9"),
        new("jpeg-sof-0x0", Jpeg(0, 0, 3), "JPEG has an invalid header: frame size 0x0"),
        new("jpeg-2-components", Jpeg(8, 8, 2), "2 colour components"),
        new("jpeg-65535-squared", Jpeg(65535, 65535, 3), "exceeds the limit"),
        new("jpeg-no-frame", [0xFF, 0xD8, 0xFF, 0xDA, 0x00, 0x08, 1, 1, 0, 0, 0x3F, 0, 0xFF, 0xD9], "no SOF marker"),
        new("jpeg-garbage-after-header", [.. Jpeg(8, 8, 3), .. Enumerable.Repeat((byte)0x5A, 64)], "JPEG data is"),
        new("webp-riff-size-lie", WebPLossless(16, 16, riffExtra: 4096), "WebP is truncated: its RIFF header declares"),
        new("webp-tiny-lossless-16384-squared", WebPLossless(16384, 16384), "exceeds the limit"),
        new("webp-unknown-chunk", [.. "RIFF"u8, 22, 0, 0, 0, .. "WEBPABCD"u8, .. new byte[18]], "first chunk 'ABCD'"),
        new("gif-0x0", [.. "GIF89a"u8, 0, 0, 0, 0, 0, 0, 0], "GIF has an invalid header: screen size 0x0"),
        new("gif-65535-squared", [.. "GIF89a"u8, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0x2C, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0, 2, 2, 0x4C, 1, 0, 0x3B], "exceeds the limit"),
        new("bmp-dib-size-7", Bmp(7, 4, 4), "DIB header size 7"),
        new("bmp-height-int-min", Bmp(40, 4, int.MinValue), "invalid header"),
        new("ico", [0, 0, 1, 0, 1, 0, 16, 16, 0, 0, 1, 0, 32, 0, .. new byte[32]], "ICO/CUR"),
        new("tiff", [.. "II*\0"u8, 8, 0, 0, 0, .. new byte[16]], "TIFF"),
        new("text", Encoding.UTF8.GetBytes("this is not an image at all"), "not an image this library decodes"),
        new("empty", [], "no bytes"),
    ];

    /// <summary>A valid 8-bit grey PNG of zeros: 258 KB for 9,400 × 9,400 (88 M pixels, under Pillow's limit).</summary>
    public static byte[] ZeroPng(int width, int height)
    {
        using var raw = new MemoryStream();
        using (var z = new ZLibStream(raw, CompressionLevel.SmallestSize, leaveOpen: true))
        {
            var row = new byte[width + 1];
            for (int y = 0; y < height; y++) z.Write(row);
        }
        return Png(width, height, 8, 0, raw.ToArray());
    }

    /// <summary>A PNG: signature, IHDR, one IDAT with <paramref name="idat"/>, IEND (CRCs correct).</summary>
    public static byte[] Png(int width, int height, byte depth, byte colourType, byte[] idat)
    {
        var ihdr = new byte[13];
        BinaryPrimitives.WriteInt32BigEndian(ihdr, width);
        BinaryPrimitives.WriteInt32BigEndian(ihdr.AsSpan(4), height);
        ihdr[8] = depth;
        ihdr[9] = colourType;
        return [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, .. Chunk("IHDR", ihdr), .. Chunk("IDAT", idat), .. Chunk("IEND", [])];
    }

    private static byte[] Grey16WithChunk(uint length)
    {
        var png = Png(8, 8, 16, 0, Deflate(new byte[8 * 17]));
        var chunk = new byte[12];
        BinaryPrimitives.WriteUInt32BigEndian(chunk, length);
        "tEXt"u8.CopyTo(chunk.AsSpan(4));
        return [.. png[..^12], .. chunk, .. png[^12..]];        // after the IDAT, where Skia's header read has stopped
    }

    private static byte[] Truncate(byte[] png) => png[..(png.Length - 30)];

    private static byte[] Chunk(string type, byte[] data)
    {
        var chunk = new byte[12 + data.Length];
        BinaryPrimitives.WriteInt32BigEndian(chunk, data.Length);
        Encoding.ASCII.GetBytes(type).CopyTo(chunk, 4);
        data.CopyTo(chunk, 8);
        BinaryPrimitives.WriteUInt32BigEndian(chunk.AsSpan(8 + data.Length), Crc32(chunk.AsSpan(4, 4 + data.Length)));
        return chunk;
    }

    private static uint Crc32(ReadOnlySpan<byte> bytes)
    {
        uint crc = 0xFFFFFFFF;
        foreach (byte b in bytes)
        {
            crc ^= b;
            for (int k = 0; k < 8; k++) crc = (crc & 1) != 0 ? (crc >> 1) ^ 0xEDB88320 : crc >> 1;
        }
        return ~crc;
    }

    public static byte[] Deflate(byte[] data)
    {
        using var raw = new MemoryStream();
        using (var z = new ZLibStream(raw, CompressionLevel.Fastest, leaveOpen: true)) z.Write(data);
        return raw.ToArray();
    }

    private static byte[] Jpeg(int width, int height, byte components)
    {
        var sof = new List<byte> { 0xFF, 0xC0, 0, (byte)(8 + 3 * components), 8, (byte)(height >> 8), (byte)height, (byte)(width >> 8), (byte)width, components };
        for (int c = 0; c < components; c++) sof.AddRange([(byte)(c + 1), 0x11, 0]);
        return [0xFF, 0xD8, .. sof, 0xFF, 0xD9];
    }

    private static byte[] WebPLossless(int width, int height, int riffExtra = 0)
    {
        uint bits = (uint)(width - 1) | (uint)(height - 1) << 14;
        var payload = new byte[] { 0x2F, (byte)bits, (byte)(bits >> 8), (byte)(bits >> 16), (byte)(bits >> 24), 0, 0, 0, 0, 0 };
        int riff = 4 + 8 + payload.Length + riffExtra;
        return [.. "RIFF"u8, (byte)riff, (byte)(riff >> 8), (byte)(riff >> 16), (byte)(riff >> 24), .. "WEBPVP8L"u8,
            (byte)payload.Length, 0, 0, 0, .. payload];
    }

    private static byte[] Bmp(int dib, int width, int height)
    {
        var b = new byte[64];
        "BM"u8.CopyTo(b);
        BinaryPrimitives.WriteInt32LittleEndian(b.AsSpan(14), dib);
        BinaryPrimitives.WriteInt32LittleEndian(b.AsSpan(18), width);
        BinaryPrimitives.WriteInt32LittleEndian(b.AsSpan(22), height);
        return b;
    }
}
