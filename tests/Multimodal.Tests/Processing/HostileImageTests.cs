using System.Diagnostics;
using Multimodal.Processing;
using Multimodal.Tests.TestSupport;
using Xunit.Abstractions;

namespace Multimodal.Tests.Processing;

/// <summary>The decoder against damaged and hostile images (<see cref="HostileImages"/>): every one is refused with an
/// <see cref="ImageDecodeException"/> that names the format and what is wrong — with the pixel limit raised as far as it
/// goes, where sizes that overflow 32-bit arithmetic once crashed the process — and sizes are refused from the header,
/// before anything is allocated.</summary>
public sealed class HostileImageTests(ITestOutputHelper output)
{
    public static TheoryData<HostileImages.Case> Cases() => new(HostileImages.All());

    [Theory]
    [MemberData(nameof(Cases))]
    public void Each_hostile_image_is_refused_with_a_message_that_says_what_is_wrong(HostileImages.Case image)
    {
        // Cases about the limit run under the default one; every other case with no limit at all.
        long limit = image.Expected.Contains("exceeds the limit") ? ImageDecoder.DefaultMaxPixels : long.MaxValue;
        var e = Assert.Throws<ImageDecodeException>(() => ImageDecoder.Decode(image.Bytes, image.Name, limit));
        output.WriteLine($"{image.Name} ({image.Bytes.Length} bytes): {e.Message}");
        Assert.Contains(image.Expected, e.Message);
        Assert.StartsWith(image.Name + ":", e.Message);
    }

    [Fact]
    public void A_size_over_the_limit_is_refused_from_the_header_before_any_pixel_buffer_exists()
    {
        byte[] bomb = HostileImages.ZeroPng(9400, 9400);                  // 88 M pixels in a few hundred KB
        var clock = Stopwatch.StartNew();
        long before = GC.GetAllocatedBytesForCurrentThread();
        var e = Assert.Throws<ImageDecodeException>(() => ImageDecoder.Decode(bomb, "bomb", maxPixels: 12_000_000));
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        output.WriteLine($"{bomb.Length} bytes: refused in {clock.Elapsed.TotalMilliseconds:F1} ms, {allocated} bytes allocated: {e.Message}");
        Assert.Contains("9400x9400 = 88360000 pixels exceeds the limit of 12000000", e.Message);
        Assert.True(allocated < 100_000, $"{allocated} bytes allocated before refusing");
        var header = ImageHeader.Read(bomb);
        Assert.Equal((ImageFormat.Png, 9400, 9400), (header.Format, header.Width, header.Height));
    }

    [Fact]
    public void A_sixteen_bit_grey_png_decodes_at_eight_bytes_a_pixel()
    {
        // 1024 x 1024 grey16 zeros: RGBA (4 bytes) and the raw samples (4 bytes) a pixel, the zlib input and small rows.
        var rows = new byte[1024 * (1024 * 2 + 1)];
        byte[] png = HostileImages.Png(1024, 1024, 16, 0, HostileImages.Deflate(rows));
        long before = GC.GetAllocatedBytesForCurrentThread();
        var image = ImageDecoder.Decode(png);
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        output.WriteLine($"grey16 1024x1024: {allocated / (1024.0 * 1024):F2} bytes a pixel");
        Assert.Equal("I", image.Mode);
        Assert.True(allocated < 1024 * 1024 * 8.1, $"{allocated} bytes for 1 M pixels");
    }

    [Fact]
    public async Task Special_files_are_refused_without_blocking()
    {
        using var dir = new TempDir();
        string fifo = Path.Combine(dir.Path, "image.png");
        var made = Repo.Run("mkfifo", [fifo], dir.Path, TimeSpan.FromSeconds(10));
        Assert.Equal(0, made.ExitCode);
        var read = Task.Run(() => Assert.Throws<ImageDecodeException>(() => ImageDecoder.Decode(fifo)));
        var e = await read.WaitAsync(TimeSpan.FromSeconds(5));     // TimeoutException: reading the FIFO blocked
        output.WriteLine(e.Message);
        Assert.Contains("not a regular file", e.Message);
        Assert.Contains("directory", Assert.Throws<ImageDecodeException>(() => ImageDecoder.Decode(dir.Path)).Message);
    }
}
