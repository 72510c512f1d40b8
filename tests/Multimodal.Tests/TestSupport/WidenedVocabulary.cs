using Multimodal.Loading;
using static TorchSharp.torch;

namespace Multimodal.Tests.TestSupport;

/// <summary>Fixture weights made to take a real tokenizer's ids: the named tensors get extra rows of small random values
/// (seeded), so a tiny model runs end to end with a real vocabulary and answers arbitrary text.</summary>
public static class WidenedVocabulary
{
    /// <summary>Rewrites <paramref name="weights"/> with each named tensor widened to the given number of rows; in the
    /// widened tensors, each row of <paramref name="moves"/> is moved to its new place (its old place gets random values).</summary>
    public static void Widen(string weights, IReadOnlyDictionary<string, int> rows, IReadOnlyDictionary<int, int>? moves = null)
    {
        var widened = new Dictionary<string, Tensor>();
        using (var file = SafetensorsFile.Open(weights))
        {
            var generator = new Generator(seed: 7);
            foreach (var name in file.Entries.Keys)
            {
                var t = file.Read(name);
                int wanted = rows.TryGetValue(name, out int r) ? r : (int)t.shape[0];
                if (wanted == t.shape[0]) { widened[name] = t; continue; }
                var wide = cat([t, randn(wanted - t.shape[0], t.shape[1], generator: generator).mul_(0.02)]);
                foreach (var (from, to) in moves ?? new Dictionary<int, int>())
                {
                    wide[to].copy_(t[from]);
                    wide[from].copy_(randn(t.shape[1], generator: generator).mul_(0.02));
                }
                widened[name] = wide;
            }
        }
        SafetensorsWriter.Write(weights, widened);
        foreach (var t in widened.Values) t.Dispose();
    }

    /// <summary>The fixture's preprocessor config of <paramref name="published"/> with its image size set to the
    /// fixtures' 30 pixels.</summary>
    public static string Preprocessor(string published) =>
        File.ReadAllText(Path.Combine(AppContext.BaseDirectory, "Preprocess", "configs", published, "preprocessor_config.json"))
            .Replace("\"height\": 224", "\"height\": 30").Replace("\"width\": 224", "\"width\": 30").Replace("\"image_size\": 224", "\"image_size\": 30");
}
