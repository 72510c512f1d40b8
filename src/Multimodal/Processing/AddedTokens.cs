namespace Multimodal.Processing;

/// <summary>Splits text around a tokenizer's added tokens before the model's own tokenization, as the
/// transformers fast tokenizers' added-token trie does: scanning left to right, the longest added token
/// starting at a position wins.</summary>
internal static class AddedTokens
{
    /// <returns>Segments in order: plain text (Id null) or one added token (its id).</returns>
    public static List<(string Text, int? Id)> Split(string text, IReadOnlyDictionary<string, int> added)
    {
        var result = new List<(string, int?)>();
        if (added.Count == 0)
        {
            if (text.Length > 0) result.Add((text, null));
            return result;
        }
        var byFirst = added.Keys.Where(k => k.Length > 0).GroupBy(k => k[0])
            .ToDictionary(g => g.Key, g => g.OrderByDescending(k => k.Length).ToArray());
        int start = 0, i = 0;
        while (i < text.Length)
        {
            string? match = null;
            if (byFirst.TryGetValue(text[i], out var candidates))
                match = candidates.FirstOrDefault(c => string.CompareOrdinal(text, i, c, 0, c.Length) == 0);
            if (match is null)
            {
                i++;
                continue;
            }
            if (i > start) result.Add((text[start..i], null));
            result.Add((match, added[match]));
            i += match.Length;
            start = i;
        }
        if (start < text.Length) result.Add((text[start..], null));
        return result;
    }
}
