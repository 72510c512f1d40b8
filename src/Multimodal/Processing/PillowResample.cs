namespace Multimodal.Processing;

/// <summary>Pillow's resampling filters (the <c>resample</c> numbers of Pillow and preprocessor configs).</summary>
public enum ResampleFilter
{
    /// <summary>Nearest neighbour (0).</summary>
    Nearest = 0,
    /// <summary>Lanczos, support 3 (1).</summary>
    Lanczos = 1,
    /// <summary>Bilinear / triangle, support 1 (2).</summary>
    Bilinear = 2,
    /// <summary>Bicubic with a = −0.5, support 2 (3).</summary>
    Bicubic = 3,
    /// <summary>Box, support 0.5 (4).</summary>
    Box = 4,
    /// <summary>Hamming, support 1 (5).</summary>
    Hamming = 5,
}

/// <summary>A port of Pillow 9.4's resampling (<c>libImaging/Resample.c</c>, and
/// <c>Geometry.c</c>'s affine scale for NEAREST), reproducing it bit for bit on 8-bit bands.</summary>
/// <remarks>
/// Separable: a horizontal pass, then a vertical one, each only when that size changes, with a
/// uint8 intermediate that is already rounded and clipped. When downscaling, the filter support is
/// widened by the scale (antialiasing). Weights are computed in double, renormalised over the taps
/// that fall inside the image, and quantised to 22 fraction bits, rounding half away from zero; sums
/// start at 0.5 in fixed point and are floored and clipped. Every one of these details changes
/// outputs, which is why no general-purpose image library can stand in for it.
/// </remarks>
internal static class PillowResample
{
    private const int PrecisionBits = 32 - 8 - 2;

    private static double Support(ResampleFilter filter) => filter switch
    {
        ResampleFilter.Box => 0.5,
        ResampleFilter.Bilinear or ResampleFilter.Hamming => 1.0,
        ResampleFilter.Bicubic => 2.0,
        ResampleFilter.Lanczos => 3.0,
        _ => throw new ArgumentOutOfRangeException(nameof(filter)),
    };

    private static double Kernel(ResampleFilter filter, double x)
    {
        switch (filter)
        {
            case ResampleFilter.Box:
                return x > -0.5 && x <= 0.5 ? 1.0 : 0.0;
            case ResampleFilter.Bilinear:
                x = Math.Abs(x);
                return x < 1.0 ? 1.0 - x : 0.0;
            case ResampleFilter.Hamming:
                x = Math.Abs(x);
                if (x == 0.0) return 1.0;
                if (x >= 1.0) return 0.0;
                x *= Math.PI;
                return Math.Sin(x) / x * (0.54 + 0.46 * Math.Cos(x));
            case ResampleFilter.Bicubic:
                const double a = -0.5;
                x = Math.Abs(x);
                if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
                if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
                return 0.0;
            case ResampleFilter.Lanczos:
                return x >= -3.0 && x < 3.0 ? Sinc(x) * Sinc(x / 3.0) : 0.0;
            default:
                throw new ArgumentOutOfRangeException(nameof(filter));
        }
    }

    private static double Sinc(double x)
    {
        if (x == 0.0) return 1.0;
        x *= Math.PI;
        return Math.Sin(x) / x;
    }

    /// <summary>Per output index: first input index, tap count, and <c>ksize</c> fixed-point weights.</summary>
    internal static (int[] Start, int[] Count, int[] Weights, int KernelSize) Coefficients(int inSize, int outSize, ResampleFilter filter)
    {
        double scale = (double)inSize / outSize;
        double filterScale = Math.Max(scale, 1.0);
        double support = Support(filter) * filterScale;
        double ss = 1.0 / filterScale;
        int ksize = (int)Math.Ceiling(support) * 2 + 1;
        var start = new int[outSize];
        var count = new int[outSize];
        var weights = new int[checked((long)outSize * ksize)];
        var w = new double[ksize];
        for (int xx = 0; xx < outSize; xx++)
        {
            double center = (xx + 0.5) * scale;
            int xmin = (int)(center - support + 0.5);
            if (xmin < 0) xmin = 0;
            int xmax = (int)(center + support + 0.5);
            if (xmax > inSize) xmax = inSize;
            int n = xmax - xmin;
            double sum = 0.0;
            for (int x = 0; x < n; x++)
            {
                w[x] = Kernel(filter, (x + xmin - center + 0.5) * ss);
                sum += w[x];
            }
            for (int x = 0; x < n; x++)
            {
                double v = sum != 0.0 ? w[x] / sum : w[x];
                weights[xx * ksize + x] = v < 0
                    ? (int)(-0.5 + v * (1 << PrecisionBits))
                    : (int)(0.5 + v * (1 << PrecisionBits));
            }
            start[xx] = xmin;
            count[xx] = n;
        }
        return (start, count, weights, ksize);
    }

    /// <summary>Resizes an interleaved 8-bit image (<paramref name="channels"/> bands per pixel).</summary>
    public static byte[] Resize(byte[] pixels, int width, int height, int channels, int outWidth, int outHeight, ResampleFilter filter)
    {
        if (outWidth <= 0 || outHeight <= 0) throw new ArgumentException($"cannot resize to {outWidth}x{outHeight}.");
        if (filter == ResampleFilter.Nearest) return Nearest(pixels, width, height, channels, outWidth, outHeight);
        var current = pixels;
        if (outWidth != width) current = Horizontal(current, width, height, channels, outWidth, filter);
        if (outHeight != height) current = Vertical(current, outWidth, height, channels, outHeight, filter);
        return ReferenceEquals(current, pixels) ? (byte[])pixels.Clone() : current;
    }

    private static byte Clip8(int acc)
    {
        int v = acc >> PrecisionBits;
        return (byte)(v < 0 ? 0 : v > 255 ? 255 : v);
    }

    private static byte[] Horizontal(byte[] src, int width, int height, int channels, int outWidth, ResampleFilter filter)
    {
        var (start, count, weights, ksize) = Coefficients(width, outWidth, filter);
        var dst = new byte[checked((long)outWidth * height * channels)];
        for (int y = 0; y < height; y++)
        {
            int row = y * width * channels;
            for (int xx = 0; xx < outWidth; xx++)
            {
                int k0 = xx * ksize, first = row + start[xx] * channels;
                for (int c = 0; c < channels; c++)
                {
                    int acc = 1 << (PrecisionBits - 1);
                    for (int x = 0; x < count[xx]; x++) acc += src[first + x * channels + c] * weights[k0 + x];
                    dst[(y * outWidth + xx) * channels + c] = Clip8(acc);
                }
            }
        }
        return dst;
    }

    private static byte[] Vertical(byte[] src, int width, int height, int channels, int outHeight, ResampleFilter filter)
    {
        var (start, count, weights, ksize) = Coefficients(height, outHeight, filter);
        int stride = width * channels;
        var dst = new byte[checked((long)outHeight * stride)];
        for (int yy = 0; yy < outHeight; yy++)
        {
            int k0 = yy * ksize, first = start[yy] * stride;
            for (int i = 0; i < stride; i++)
            {
                int acc = 1 << (PrecisionBits - 1);
                for (int y = 0; y < count[yy]; y++) acc += src[first + y * stride + i] * weights[k0 + y];
                dst[yy * stride + i] = Clip8(acc);
            }
        }
        return dst;
    }

    /// <summary>Pillow's 32-bit path (mode "I"): double weights, not quantised; each sample rounded half
    /// away from zero; the intermediate is int32 and not clipped.</summary>
    public static int[] ResizeInt32(int[] pixels, int width, int height, int outWidth, int outHeight, ResampleFilter filter)
    {
        var current = pixels;
        if (outWidth != width) current = Pass32(current, width, height, outWidth, filter, horizontal: true);
        if (outHeight != height) current = Pass32(current, outWidth, height, outHeight, filter, horizontal: false);
        return ReferenceEquals(current, pixels) ? (int[])pixels.Clone() : current;
    }

    private static int[] Pass32(int[] src, int width, int height, int outSize, ResampleFilter filter, bool horizontal)
    {
        int inSize = horizontal ? width : height;
        var (start, count, weights) = DoubleCoefficients(inSize, outSize, filter);
        int outW = horizontal ? outSize : width, outH = horizontal ? height : outSize;
        var dst = new int[checked((long)outW * outH)];
        for (int y = 0; y < outH; y++)
            for (int x = 0; x < outW; x++)
            {
                int o = horizontal ? x : y;
                double ss = 0.0;
                for (int k = 0; k < count[o]; k++)
                {
                    int sx = horizontal ? start[o] + k : x, sy = horizontal ? y : start[o] + k;
                    ss += src[sy * width + sx] * weights[o][k];
                }
                dst[y * outW + x] = (int)(ss >= 0 ? ss + 0.5 : ss - 0.5);
            }
        return dst;
    }

    private static (int[] Start, int[] Count, double[][] Weights) DoubleCoefficients(int inSize, int outSize, ResampleFilter filter)
    {
        double scale = (double)inSize / outSize, filterScale = Math.Max(scale, 1.0);
        double support = Support(filter) * filterScale, ss = 1.0 / filterScale;
        var start = new int[outSize];
        var count = new int[outSize];
        var weights = new double[outSize][];
        for (int xx = 0; xx < outSize; xx++)
        {
            double center = (xx + 0.5) * scale;
            int xmin = Math.Max((int)(center - support + 0.5), 0);
            int xmax = Math.Min((int)(center + support + 0.5), inSize);
            int n = xmax - xmin;
            var w = new double[n];
            double sum = 0.0;
            for (int x = 0; x < n; x++)
            {
                w[x] = Kernel(filter, (x + xmin - center + 0.5) * ss);
                sum += w[x];
            }
            if (sum != 0.0) for (int x = 0; x < n; x++) w[x] /= sum;
            start[xx] = xmin;
            count[xx] = n;
            weights[xx] = w;
        }
        return (start, count, weights);
    }

    // Geometry.c ImagingScaleAffine: the source coordinate is ACCUMULATED (xo += step), which lands
    // just below an integer at some columns where (x + 0.5) · step would not.
    private static byte[] Nearest(byte[] src, int width, int height, int channels, int outWidth, int outHeight)
    {
        static int[] Map(int inSize, int outSize)
        {
            var map = new int[outSize];
            double step = (double)inSize / outSize, pos = step * 0.5;
            for (int i = 0; i < outSize; i++)
            {
                map[i] = Math.Min((int)pos, inSize - 1);
                pos += step;
            }
            return map;
        }
        var xs = Map(width, outWidth);
        var ys = Map(height, outHeight);
        var dst = new byte[checked((long)outWidth * outHeight * channels)];
        for (int y = 0; y < outHeight; y++)
            for (int x = 0; x < outWidth; x++)
                Buffer.BlockCopy(src, (ys[y] * width + xs[x]) * channels, dst, (y * outWidth + x) * channels, channels);
        return dst;
    }
}
