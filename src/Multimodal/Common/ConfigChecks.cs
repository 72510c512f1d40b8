namespace Multimodal.Common;

/// <summary>Collects what is wrong with a config's sizes before anything is built from it, naming each key
/// (<c>text_config.hidden_size</c>), and throws one <see cref="ConfigException"/> for all of them.</summary>
/// <remarks>Bounds are far above every published model (the largest have ~100 layers, widths ~16k, vocabularies
/// ~250k): a value past them is a damaged file, and building from it would hang or exhaust memory.</remarks>
internal sealed class ConfigChecks(string source)
{
    /// <summary>Most layers (or blocks) any stack may have.</summary>
    public const int MaxLayers = 1_000;

    /// <summary>Largest width, FFN width, head count or image side.</summary>
    public const int MaxWidth = 1 << 17;

    /// <summary>Largest vocabulary or position table.</summary>
    public const int MaxVocabulary = 10_000_000;

    private readonly List<string> _problems = [];

    /// <summary>The file (or other source) the config came from, for messages.</summary>
    public string Source => source;

    /// <summary>1 ≤ value ≤ <paramref name="max"/>.</summary>
    public ConfigChecks Size(string key, long value, long max = MaxWidth)
    {
        if (value < 1 || value > max) _problems.Add($"{key} = {value} must be between 1 and {max}");
        return this;
    }

    /// <summary>A layer count: 1 ≤ value ≤ <see cref="MaxLayers"/> (0 allowed where a stack may be empty).</summary>
    public ConfigChecks Layers(string key, long value, bool allowZero = false)
    {
        if (value < (allowZero ? 0 : 1) || value > MaxLayers) _problems.Add($"{key} = {value} must be between {(allowZero ? 0 : 1)} and {MaxLayers}");
        return this;
    }

    /// <summary>A vocabulary or position table size.</summary>
    public ConfigChecks Vocabulary(string key, long value) => Size(key, value, MaxVocabulary);

    /// <summary>Heads split the width evenly.</summary>
    public ConfigChecks Heads(string widthKey, int width, string headsKey, int heads)
    {
        Size(widthKey, width).Size(headsKey, heads);
        if (width >= 1 && heads >= 1 && width % heads != 0) _problems.Add($"{widthKey} = {width} is not a multiple of {headsKey} = {heads}");
        return this;
    }

    /// <summary>The image divides into whole patches.</summary>
    public ConfigChecks Patches(string prefix, int imageSize, int patchSize)
    {
        Size($"{prefix}image_size", imageSize).Size($"{prefix}patch_size", patchSize);
        if (imageSize >= 1 && patchSize >= 1 && imageSize % patchSize != 0)
            _problems.Add($"{prefix}image_size = {imageSize} is not a multiple of {prefix}patch_size = {patchSize}");
        return this;
    }

    /// <summary>An id that must index a table of <paramref name="size"/> rows.</summary>
    public ConfigChecks Id(string key, long? id, long size)
    {
        if (id is long v && (v < 0 || v >= size)) _problems.Add($"{key} = {v} is outside the vocabulary of {size}");
        return this;
    }

    /// <summary>Any other condition.</summary>
    public ConfigChecks Require(bool ok, string problem)
    {
        if (!ok) _problems.Add(problem);
        return this;
    }

    /// <summary>Throws one exception naming the file and every problem, if there is any.</summary>
    public void ThrowIfAny()
    {
        if (_problems.Count > 0) throw new ConfigException(source, string.Join("; ", _problems) + ".");
    }
}
