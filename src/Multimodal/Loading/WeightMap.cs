using System.Text.RegularExpressions;

namespace Multimodal.Loading;

/// <summary>A model key built from several published tensors (for example BLIP-2's legacy
/// <c>q_bias</c> + <c>v_bias</c> → <c>qkv.bias</c>).</summary>
/// <param name="ModelPattern">model key; <c>*</c> stands for one layer index.</param>
/// <param name="PublishedPatterns">published keys, with the same <c>*</c>.</param>
/// <param name="Combine">builds the model tensor from the published ones (CPU, stored dtype).</param>
/// <param name="Shape">the shape <see cref="Combine"/> will produce, from the published shapes, so it is
/// checked before anything is read.</param>
public sealed record CompositeRule(
    string ModelPattern,
    IReadOnlyList<string> PublishedPatterns,
    Func<IReadOnlyList<Tensor>, Tensor> Combine,
    Func<IReadOnlyList<long[]>, long[]> Shape);

/// <summary>How one model family's published tensor names map onto its module keys: written as data,
/// so a reviewer can diff it against upstream's conversion scripts.</summary>
/// <remarks>Patterns use <c>*</c> for one layer index (digits). Module field names mirror published
/// keys, so most families need no renames at all.</remarks>
public sealed record WeightMap
{
    /// <summary>Literal renames, published pattern → model pattern; the first match wins.</summary>
    public IReadOnlyList<(string Published, string Model)> Renames { get; init; } = [];

    /// <summary>Model keys assembled from several published tensors.</summary>
    public IReadOnlyList<CompositeRule> Composites { get; init; } = [];

    /// <summary>Model keys that share one parameter with another model key (tied weights): absent from
    /// files written by <c>save_pretrained</c>, or present as a duplicate that is tied, not copied.</summary>
    public IReadOnlyDictionary<string, string> Tied { get; init; } = new Dictionary<string, string>();

    /// <summary>Published keys that are known and deliberately not loaded, with the reason.</summary>
    public IReadOnlyList<(string Pattern, string Reason)> Ignored { get; init; } = [];

    internal static Regex ToRegex(string pattern) =>
        new("^" + Regex.Escape(pattern).Replace(@"\*", @"(\d+)") + "$", RegexOptions.CultureInvariant);

    internal static string Substitute(string pattern, Match match)
    {
        int group = 1;
        var parts = pattern.Split('*');
        var result = new System.Text.StringBuilder(parts[0]);
        for (int i = 1; i < parts.Length; i++)
            result.Append(match.Groups[group++].Value).Append(parts[i]);
        return result.ToString();
    }

    /// <summary>The published key a model key comes from by <see cref="Renames"/> (itself when none matches): what a
    /// user looks for in the file when the model key is missing.</summary>
    public string ToPublishedKey(string model)
    {
        foreach (var (from, to) in Renames)
        {
            var m = ToRegex(to).Match(model);
            if (m.Success) return Substitute(from, m);
        }
        return model;
    }

    /// <summary>The model key a published key maps to by <see cref="Renames"/> (itself when none matches).</summary>
    public string ToModelKey(string published)
    {
        foreach (var (from, to) in Renames)
        {
            var m = ToRegex(from).Match(published);
            if (m.Success) return Substitute(to, m);
        }
        return published;
    }
}
