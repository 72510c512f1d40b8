namespace Multimodal.Processing;

/// <summary>An image decoded the way Pillow 9.4 decodes it, kept as 8-bit RGBA with straight alpha, plus
/// the mode Pillow would report (processors convert differently per mode).</summary>
/// <param name="Width">width in pixels.</param>
/// <param name="Height">height in pixels.</param>
/// <param name="Mode">Pillow's mode: "RGB", "RGBA", "L", "LA", "P", "CMYK", "I" (16-bit grey).</param>
/// <param name="Rgba">Width × Height × 4 bytes, row-major, straight alpha; for "I" the grey value is
/// already clipped to 0..255, as Pillow's conversion to RGB does.</param>
public sealed record DecodedImage(int Width, int Height, string Mode, byte[] Rgba)
{
    /// <summary>Pillow's <c>convert("RGB")</c>: alpha dropped (not composited), palette looked up, grey
    /// replicated, CMYK converted. Width × Height × 3 bytes.</summary>
    public byte[] ToRgb()
    {
        var rgb = new byte[Width * Height * 3];
        for (int i = 0, j = 0; i < rgb.Length; i += 3, j += 4)
        {
            rgb[i] = Rgba[j];
            rgb[i + 1] = Rgba[j + 1];
            rgb[i + 2] = Rgba[j + 2];
        }
        return rgb;
    }
}
