using System.Diagnostics;
using System.Text.Json.Nodes;
using Multimodal.Blip2;
using Multimodal.Generation;
using Multimodal.Processing;
using static TorchSharp.torch;

namespace Multimodal.Benchmarks;

/// <summary>What a server's dynamic batching buys: 8 requests one after another through a plain
/// <see cref="Blip2Captioner"/>, then 8 concurrent clients through one with <see cref="Blip2Captioner.Batching"/>
/// (8 rows, 50 ms wait), each request a 20-token caption of one of the sample scenes.</summary>
internal static class Serving
{
    public static JsonObject Measure(string folder, ScalarType dtype, string imageFolder, int newTokens)
    {
        var images = Directory.GetFiles(imageFolder, "*.png").Order(StringComparer.Ordinal).Select(p => ImageDecoder.Decode(p)).ToArray();
        var options = new GenerationOptions { MaxNewTokens = newTokens, MinNewTokens = newTokens };
        const int requests = 8;
        double sequential, concurrent;
        int largest;
        using (var plain = Blip2Captioner.FromPretrained(folder, dtype: dtype))
        {
            plain.CaptionAsync(images[0], "", options).GetAwaiter().GetResult();   // warm-up
            var clock = Stopwatch.StartNew();
            for (int i = 0; i < requests; i++) plain.CaptionAsync(images[i % images.Length], "", options).GetAwaiter().GetResult();
            sequential = requests / clock.Elapsed.TotalSeconds;
        }
        using (var batched = Blip2Captioner.FromPretrained(folder, dtype: dtype, batching: new BatchingOptions(8, TimeSpan.FromMilliseconds(50))))
        {
            var clock = Stopwatch.StartNew();
            Task.WaitAll(Enumerable.Range(0, requests).Select(i => Task.Run(() => batched.CaptionAsync(images[i % images.Length], "", options))).ToArray());
            concurrent = requests / clock.Elapsed.TotalSeconds;
            largest = batched.LargestBatch;
        }
        return new JsonObject { ["sequential_rps"] = sequential, ["concurrent_rps"] = concurrent, ["largest_batch"] = largest };
    }
}
