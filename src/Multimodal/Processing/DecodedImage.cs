namespace Multimodal.Processing;

/// <summary>An image decoded the way Pillow 9.4 decodes it, kept as 8-bit RGBA with straight alpha, plus
/// the mode Pillow would report (processors convert differently per mode).</summary>
/// <param name="Width">width in pixels.</param>
/// <param name="Height">height in pixels.</param>
/// <param name="Mode">Pillow's mode: "RGB", "RGBA", "L", "LA", "P", "CMYK", "I" (16-bit grey).</param>
/// <param name="Rgba">Width × Height × 4 bytes, row-major, straight alpha; for "I" the grey value is
/// already clipped to 0..255, as Pillow's conversion to RGB does.</param>
/// <param name="Gray16">for mode "I" (16-bit grey PNG), the raw samples 0..65535 (open_clip resizes them
/// before clipping); null otherwise.</param>
public sealed record DecodedImage(int Width, int Height, string Mode, byte[] Rgba, int[]? Gray16 = null)
{
    /// <summary>Pillow's <c>convert("RGB")</c>: alpha dropped (not composited), palette looked up, grey
    /// replicated, CMYK converted. Width × Height × 3 bytes.</summary>
    public byte[] ToRgb()
    {
        var rgb = new byte[checked(Width * Height * 3)];
        for (int i = 0, j = 0; i < rgb.Length; i += 3, j += 4)
        {
            rgb[i] = Rgba[j];
            rgb[i + 1] = Rgba[j + 1];
            rgb[i + 2] = Rgba[j + 2];
        }
        return rgb;
    }

    /// <summary>IDEFICS' <c>convert_to_rgb</c>: an RGB image unchanged; anything else converted to RGBA and
    /// composited over opaque white (Pillow's <c>alpha_composite</c> integer arithmetic), so transparent
    /// areas turn white.</summary>
    public byte[] ToRgbOverWhite()
    {
        if (Mode == "RGB") return ToRgb();
        var rgb = new byte[checked(Width * Height * 3)];
        for (int i = 0, j = 0; i < rgb.Length; i += 3, j += 4)
        {
            int a = Rgba[j + 3];
            if (a == 255)
            {
                rgb[i] = Rgba[j]; rgb[i + 1] = Rgba[j + 1]; rgb[i + 2] = Rgba[j + 2];
                continue;
            }
            if (a == 0)
            {
                rgb[i] = rgb[i + 1] = rgb[i + 2] = 255;
                continue;
            }
            // AlphaComposite.c with an opaque white destination: out alpha is 255.
            int coef1 = a * 255 * 255 * 128 / (a * 255 + 255 * (255 - a));
            int coef2 = 255 * 128 - coef1;
            for (int c = 0; c < 3; c++)
            {
                int t = Rgba[j + c] * coef1 + 255 * coef2 + (128 << 7);
                rgb[i + c] = (byte)((((t >> 8) + t) >> 8) >> 7);
            }
        }
        return rgb;
    }
}
