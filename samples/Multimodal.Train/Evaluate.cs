using Multimodal.Blip2;
using Multimodal.Generation;

namespace Multimodal.Train;

/// <summary>Exact-match caption accuracy of a checkpoint folder on scenes drawn from a seed.</summary>
public static class Evaluate
{
    public static async Task<(double Accuracy, List<(string Expected, string Actual)> Misses)> ExactMatchAsync(string folder, int seed, int count,
        Multimodal.Common.WeightQuantization quantization = Multimodal.Common.WeightQuantization.None)
    {
        var (accuracy, misses, _) = await CaptionsAsync(folder, seed, count, quantization);
        return (accuracy, misses);
    }

    /// <summary>Exact-match accuracy, the misses, and every caption in scene order.</summary>
    public static async Task<(double Accuracy, List<(string Expected, string Actual)> Misses, List<string> Captions)> CaptionsAsync(string folder,
        int seed, int count, Multimodal.Common.WeightQuantization quantization = Multimodal.Common.WeightQuantization.None)
    {
        using var blip2 = Blip2Captioner.FromPretrained(folder, quantization: quantization);
        return await CaptionsAsync(blip2, seed, count);
    }

    /// <summary><see cref="CaptionsAsync(string, int, int, Multimodal.Common.WeightQuantization)"/> with a captioner already
    /// loaded (and perhaps altered).</summary>
    public static async Task<(double Accuracy, List<(string Expected, string Actual)> Misses, List<string> Captions)> CaptionsAsync(Blip2Captioner blip2,
        int seed, int count)
    {
        var captions = new List<string>();
        var scenes = Scenes.Generate(seed, count).ToList();
        var images = scenes.Select(s => Scenes.Render(s.Shapes, s.Background)).ToList();
        var misses = new List<(string, string)>();
        int correct = 0;
        var options = new GenerationOptions(); // the folder's generation_config.json: 50 new tokens
        for (int start = 0; start < scenes.Count; start += 50)
        {
            int n = Math.Min(50, scenes.Count - start);
            var results = await blip2.CaptionAsync(images.GetRange(start, n), Enumerable.Repeat("", n).ToList(), options);
            for (int i = 0; i < n; i++)
            {
                string expected = Scenes.Caption(scenes[start + i].Shapes);
                captions.Add(results[i].Text);
                if (results[i].Text == expected) correct++;
                else misses.Add((expected, results[i].Text));
            }
        }
        return ((double)correct / scenes.Count, misses, captions);
    }
}
