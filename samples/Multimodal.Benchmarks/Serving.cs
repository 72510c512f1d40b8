using System.Diagnostics;
using System.Globalization;
using System.Text.Json.Nodes;
using Multimodal.Blip2;
using Multimodal.Generation;
using Multimodal.Processing;
using static TorchSharp.torch;

namespace Multimodal.Benchmarks;

/// <summary>What a server's dynamic batching buys: 8 requests one after another through a plain
/// <see cref="Blip2Captioner"/>, then 8 concurrent clients through one with <see cref="Blip2Captioner.Batching"/>
/// (8 rows, 50 ms wait), each request an answer of exactly N tokens about one of the sample scenes, for each N asked.
/// Batching shares the language model's weight reads between rows; the image encoder's GEMMs are compute-bound and
/// cost the same per image batched or not, so the gain grows with the answer's length.</summary>
internal static class Serving
{
    public static JsonObject Measure(string folder, ScalarType dtype, string imageFolder, IReadOnlyList<int> answerTokens)
    {
        var images = Directory.GetFiles(imageFolder, "*.png").Order(StringComparer.Ordinal).Select(p => ImageDecoder.Decode(p)).ToArray();
        const int requests = 8;
        var result = new JsonObject();
        using var plain = Blip2Captioner.FromPretrained(folder, dtype: dtype);
        using var batched = Blip2Captioner.FromPretrained(folder, dtype: dtype, batching: new BatchingOptions(8, TimeSpan.FromMilliseconds(50)));
        foreach (int tokens in answerTokens)
        {
            var options = new GenerationOptions { MaxNewTokens = tokens, MinNewTokens = tokens };
            plain.CaptionAsync(images[0], "", options).GetAwaiter().GetResult();   // warm-up
            var clock = Stopwatch.StartNew();
            for (int i = 0; i < requests; i++) plain.CaptionAsync(images[i % images.Length], "", options).GetAwaiter().GetResult();
            double sequential = requests / clock.Elapsed.TotalSeconds;
            clock.Restart();
            Task.WaitAll(Enumerable.Range(0, requests).Select(i => Task.Run(() => batched.CaptionAsync(images[i % images.Length], "", options))).ToArray());
            double concurrent = requests / clock.Elapsed.TotalSeconds;
            result[tokens.ToString(CultureInfo.InvariantCulture)] = new JsonObject
            {
                ["sequential_rps"] = sequential, ["concurrent_rps"] = concurrent, ["largest_batch"] = batched.LargestBatch,
            };
            Console.WriteLine($"serving, {tokens}-token answers: sequential {sequential:F3} requests/s, 8 concurrent clients {concurrent:F3} requests/s = {concurrent / sequential:F2}x");
        }
        return result;
    }
}
