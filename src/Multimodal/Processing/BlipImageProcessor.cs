using System.Text.Json;
using System.Text.Json.Serialization;

namespace Multimodal.Processing;

/// <summary>transformers v4.45.1 <c>BlipImageProcessor</c> settings, read from
/// <c>preprocessor_config.json</c>; initializers are upstream's defaults (note the default size is 384,
/// BLIP-2 checkpoints say 224 or 364).</summary>
public sealed record BlipImageProcessorConfig
{
    /// <summary>Resize to <see cref="Size"/>.</summary>
    public bool DoResize { get; init; } = true;

    /// <summary>Output size; BLIP resizes to exactly this, without keeping the aspect ratio.</summary>
    public JsonElement? Size { get; init; }

    /// <summary><c>resample</c>: Pillow filter number (3 = bicubic).</summary>
    public int Resample { get; init; } = (int)ResampleFilter.Bicubic;

    /// <summary>Multiply by <see cref="RescaleFactor"/>.</summary>
    public bool DoRescale { get; init; } = true;

    /// <summary><c>rescale_factor</c> (default 1 / 255.0): 1/255 by default.</summary>
    public double RescaleFactor { get; init; } = 1 / 255.0;

    /// <summary><c>do_normalize</c> (default true): Subtract the mean and divide by the std.</summary>
    public bool DoNormalize { get; init; } = true;

    /// <summary>Per-channel mean (OpenAI CLIP's by default).</summary>
    public double[] ImageMean { get; init; } = [0.48145466, 0.4578275, 0.40821073];

    /// <summary>Per-channel std (OpenAI CLIP's by default).</summary>
    public double[] ImageStd { get; init; } = [0.26862954, 0.26130258, 0.27577711];

    /// <summary><c>do_convert_rgb</c> (default true): Convert to RGB first (alpha dropped).</summary>
    public bool DoConvertRgb { get; init; } = true;

    /// <summary>Other keys of the file.</summary>
    [JsonExtensionData] public Dictionary<string, JsonElement>? Unbound { get; init; }

    /// <summary>(height, width) from <see cref="Size"/>: <c>{"height", "width"}</c>, <c>{"shortest_edge"}</c> or a number.</summary>
    public (int Height, int Width) OutputSize
    {
        get
        {
            if (Size is not JsonElement size) return (384, 384);
            if (size.ValueKind == JsonValueKind.Number) return (size.GetInt32(), size.GetInt32());
            if (size.TryGetProperty("height", out var h) && size.TryGetProperty("width", out var w)) return (h.GetInt32(), w.GetInt32());
            if (size.TryGetProperty("shortest_edge", out var s)) return (s.GetInt32(), s.GetInt32());
            throw new InvalidDataException($"preprocessor_config.json: size {size.GetRawText()} is not {{height, width}}, {{shortest_edge}} or a number.");
        }
    }
}

/// <summary>transformers v4.45.1 <c>BlipImageProcessor</c> (image_processing_blip.py), as BLIP-2's
/// processor uses it: convert to RGB (alpha dropped), resize to exactly the configured size with
/// Pillow's filter, rescale in double then cast to float32, normalize in float32, channels first.
/// (B images) → (B, 3, H, W) float32, equal to upstream's <c>pixel_values</c> bit for bit.</summary>
public sealed class BlipImageProcessor
{
    private readonly float[,] _lut;

    /// <summary>The settings.</summary>
    public BlipImageProcessorConfig Config { get; }

    /// <summary>Creates a processor; validates the settings.</summary>
    public BlipImageProcessor(BlipImageProcessorConfig config)
    {
        Config = config;
        var (h, w) = config.OutputSize;
        if (h <= 0 || w <= 0) throw new InvalidDataException($"preprocessor size {h}x{w} must be positive.");
        if (!Enum.IsDefined(typeof(ResampleFilter), config.Resample))
            throw new InvalidDataException($"preprocessor resample = {config.Resample} is not a Pillow filter (0-5).");
        if (config.ImageMean.Length != 3 || config.ImageStd.Length != 3)
            throw new InvalidDataException("preprocessor image_mean and image_std must have 3 values.");
        // Every output value depends only on (channel, level): a table is exact and fast.
        _lut = PixelTable.Transformers(config.DoRescale ? config.RescaleFactor : 1.0,
            config.DoNormalize ? config.ImageMean : [0, 0, 0], config.DoNormalize ? config.ImageStd : [1, 1, 1]);
    }

    /// <summary>Reads <c>preprocessor_config.json</c> from a checkpoint folder.</summary>
    /// <exception cref="FileNotFoundException">the folder has no preprocessor_config.json.</exception>
    /// <exception cref="InvalidDataException">the file is malformed.</exception>
    public static BlipImageProcessor FromFolder(string folder)
    {
        string path = Path.Combine(folder, "preprocessor_config.json");
        if (!File.Exists(path)) throw new FileNotFoundException($"Checkpoint folder '{folder}' has no preprocessor_config.json.", path);
        try
        {
            var config = JsonSerializer.Deserialize<BlipImageProcessorConfig>(File.ReadAllText(path), Common.PretrainedConfig.JsonOptions)
                         ?? throw new InvalidDataException($"'{path}' holds JSON null.");
            return new BlipImageProcessor(config);
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"'{path}' is not a valid preprocessor config: {e.Message}", e);
        }
    }

    /// <summary>The uint8 pixels just before rescaling, (3, H, W) channels first.</summary>
    public byte[] ResizeToBytes(DecodedImage image)
    {
        var (h, w) = Config.OutputSize;
        var rgb = image.ToRgb();
        var resized = Config.DoResize
            ? PillowResample.Resize(rgb, image.Width, image.Height, 3, w, h, (ResampleFilter)Config.Resample)
            : rgb;
        int outH = Config.DoResize ? h : image.Height, outW = Config.DoResize ? w : image.Width;
        return PixelTable.ToChw(resized, outH * outW);
    }

    /// <summary>Preprocesses a batch into (B, 3, H, W) float32 <c>pixel_values</c> on the CPU.</summary>
    public Tensor Preprocess(IReadOnlyList<DecodedImage> images)
    {
        if (images.Count == 0) throw new ArgumentException("At least one image is needed.", nameof(images));
        var (h, w) = Config.OutputSize;
        if (!Config.DoResize && images.Any(i => i.Width != images[0].Width || i.Height != images[0].Height))
            throw new ArgumentException("Without do_resize, every image of a batch must have the same size.", nameof(images));
        int outH = Config.DoResize ? h : images[0].Height, outW = Config.DoResize ? w : images[0].Width;
        return PixelTable.ToTensor(images.Select(ResizeToBytes).ToList(), outH, outW, _lut);
    }
}
