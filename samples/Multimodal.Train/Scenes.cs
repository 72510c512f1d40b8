using Multimodal.Processing;
using SkiaSharp;

namespace Multimodal.Train;

/// <summary>One shape of a scene.</summary>
public sealed record SceneShape(string Kind, string Colour, bool Big, int Slot);

/// <summary>Procedurally generated scenes: one to three shapes (circle, square, triangle, star) in distinct
/// slots (left, centre, right), each red, green, blue or yellow, big or small, over a varied light
/// background, with the template caption that describes them left to right.</summary>
public static class Scenes
{
    public const int Size = 64;
    public static readonly string[] Kinds = ["circle", "square", "triangle", "star"];
    public static readonly string[] Colours = ["red", "green", "blue", "yellow"];
    private static readonly string[] Places = ["on the left", "in the center", "on the right"];
    private static readonly SKColor[] Paint = [new(220, 30, 30), new(30, 160, 40), new(40, 60, 220), new(230, 200, 20)];

    /// <summary>Every word a caption can use.</summary>
    public static readonly string[] Words = ["a", "and", "big", "small", "on", "in", "the", "left", "center", "right", .. Colours, .. Kinds];

    /// <summary>The scenes of a seed, deterministic.</summary>
    public static IEnumerable<(SceneShape[] Shapes, int Background)> Generate(int seed, int count)
    {
        var random = new Random(seed);
        for (int i = 0; i < count; i++)
        {
            int n = random.Next(1, 4);
            var slots = Enumerable.Range(0, 3).OrderBy(_ => random.Next()).Take(n).Order().ToArray();
            var shapes = slots.Select(s => new SceneShape(Kinds[random.Next(4)], Colours[random.Next(4)], random.Next(2) == 0, s)).ToArray();
            yield return (shapes, random.Next());
        }
    }

    /// <summary>"a big red circle on the left and a small blue square on the right".</summary>
    public static string Caption(SceneShape[] shapes) =>
        string.Join(" and ", shapes.Select(s => $"a {(s.Big ? "big" : "small")} {s.Colour} {s.Kind} {Places[s.Slot]}"));

    /// <summary>Draws a scene at <see cref="Size"/>² as a decoded RGB image.</summary>
    public static DecodedImage Render(SceneShape[] shapes, int backgroundSeed)
    {
        var random = new Random(backgroundSeed);
        var info = new SKImageInfo(Size, Size, SKColorType.Rgba8888, SKAlphaType.Unpremul);
        using var surface = SKSurface.Create(info);
        var canvas = surface.Canvas;
        canvas.Clear(new SKColor((byte)random.Next(170, 256), (byte)random.Next(170, 256), (byte)random.Next(170, 256)));
        foreach (var shape in shapes)
        {
            float cx = (shape.Slot + 0.5f) * Size / 3f + random.Next(-2, 3), cy = Size / 2f + random.Next(-8, 9);
            float r = (shape.Big ? 9f : 5f) + random.Next(0, 2);
            using var paint = new SKPaint { Color = Paint[Array.IndexOf(Colours, shape.Colour)], IsAntialias = true, Style = SKPaintStyle.Fill };
            switch (shape.Kind)
            {
                case "circle": canvas.DrawCircle(cx, cy, r, paint); break;
                case "square": canvas.DrawRect(cx - r, cy - r, 2 * r, 2 * r, paint); break;
                case "triangle": canvas.DrawPath(Polygon(cx, cy, r, 3, 0), paint); break;
                default: canvas.DrawPath(Star(cx, cy, r), paint); break;
            }
        }
        var pixels = new byte[Size * Size * 4];
        using (var image = surface.Snapshot())
        unsafe
        {
            fixed (byte* p = pixels) image.ReadPixels(info, (IntPtr)p, Size * 4, 0, 0);
        }
        return new DecodedImage(Size, Size, "RGB", pixels);
    }

    /// <summary>Writes a rendered scene as PNG.</summary>
    public static void SavePng(DecodedImage image, string path)
    {
        var info = new SKImageInfo(image.Width, image.Height, SKColorType.Rgba8888, SKAlphaType.Unpremul);
        using var bitmap = new SKBitmap(info);
        System.Runtime.InteropServices.Marshal.Copy(image.Rgba, 0, bitmap.GetPixels(), image.Rgba.Length);
        using var data = bitmap.Encode(SKEncodedImageFormat.Png, 100);
        File.WriteAllBytes(path, data.ToArray());
    }

    private static SKPath Polygon(float cx, float cy, float r, int n, float rotation)
    {
        var path = new SKPath();
        for (int i = 0; i < n; i++)
        {
            double a = rotation + -Math.PI / 2 + 2 * Math.PI * i / n;
            var pt = new SKPoint(cx + r * (float)Math.Cos(a), cy + r * (float)Math.Sin(a));
            if (i == 0) path.MoveTo(pt); else path.LineTo(pt);
        }
        path.Close();
        return path;
    }

    private static SKPath Star(float cx, float cy, float r)
    {
        var path = new SKPath();
        for (int i = 0; i < 10; i++)
        {
            double a = -Math.PI / 2 + Math.PI * i / 5;
            float radius = i % 2 == 0 ? r : r * 0.45f;
            var pt = new SKPoint(cx + radius * (float)Math.Cos(a), cy + radius * (float)Math.Sin(a));
            if (i == 0) path.MoveTo(pt); else path.LineTo(pt);
        }
        path.Close();
        return path;
    }
}
