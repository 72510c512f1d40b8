using Multimodal.Blip2;
using Multimodal.Processing;
using Multimodal.Tests.TestSupport;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace Multimodal.Tests.Blip2;

/// <summary>The retrieval API end to end on the blip2-itm fixture with a made-up 100-word vocabulary (the
/// fixture's Q-Former has 100 token ids): every call must equal the model's outputs on hand-built inputs.</summary>
public sealed class Blip2RetrieverTests(ITestOutputHelper output) : IDisposable
{
    private static readonly string[] Words = ["a", "cat", "dog", "on", "the", "sofa", "in", "snow", "red", "car"];
    private readonly TempDir _folder = MakeFolder();

    public void Dispose() => _folder.Dispose();

    internal static TempDir MakeFolder()
    {
        var folder = TempDir.CopyOf(FixtureCase.Get("blip2-itm").Path);
        var vocab = new[] { "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]" }.Concat(Words)
            .Concat(Enumerable.Range(0, 85).Select(i => $"[unused{i}]")).ToArray();
        File.WriteAllLines(Path.Combine(folder.Path, "vocab.txt"), vocab);
        File.WriteAllText(Path.Combine(folder.Path, "preprocessor_config.json"), WidenedVocabulary.Preprocessor("blip2-opt-2.7b"));
        return folder;
    }

    [Fact]
    public async Task Match_similarity_and_embeddings_equal_the_model_outputs()
    {
        using var retriever = Blip2Retriever.FromPretrained(_folder.Path);
        var images = new[] { "chelsea.png", "rocket.png" }.Select(f => ImageDecoder.Decode(Path.Combine(AppContext.BaseDirectory, "Images", f))).ToList();
        string[] texts = ["a cat on the sofa", "a red car in the snow"];

        var match = await retriever.MatchAsync(images[0], texts);
        var similarity = await retriever.SimilarityAsync(images, texts);
        var imageEmbedding = await retriever.EmbedImageAsync(images[0]);
        var textEmbedding = await retriever.EmbedTextAsync(texts[0]);
        output.WriteLine($"match {string.Join(", ", match.Select(p => p.ToString("F4")))}; similarity [{similarity[0, 0]:F4} {similarity[0, 1]:F4}; {similarity[1, 0]:F4} {similarity[1, 1]:F4}]");

        // Hand-built inputs: [CLS] words [SEP], right-padded with [PAD].
        using var scope = NewDisposeScope();
        var ids = tensor(new long[] { 2, 5, 6, 8, 9, 10, 3, 0, 2, 5, 13, 14, 11, 9, 12, 3 }, [2, 8]);
        var mask = ids.ne(0).to(ScalarType.Int64);
        var processor = BlipImageProcessor.FromFolder(_folder.Path);
        using var itm = retriever.Model.ImageTextMatching(processor.Preprocess([images[0], images[0]]), ids, mask);
        var expectedMatch = itm.Logits.softmax(-1).select(1, 1).data<float>().ToArray();
        Assert.Equal(expectedMatch, match);
        using var itc = retriever.Model.ImageTextContrastive(processor.Preprocess(images), ids, mask);
        var expectedSimilarity = itc.LogitsPerImage.data<float>().ToArray();
        Assert.Equal(expectedSimilarity, new[] { similarity[0, 0], similarity[0, 1], similarity[1, 0], similarity[1, 1] });
        Assert.Equal(8, imageEmbedding.Length);
        Assert.All(imageEmbedding, v => Assert.Equal(1.0, Math.Sqrt(v.Sum(x => (double)x * x)), 4));
        Assert.Equal(1.0, Math.Sqrt(textEmbedding.Sum(x => (double)x * x)), 4);
        Assert.Equal(itc.TextEmbeds[0].data<float>().ToArray(), textEmbedding);
    }
}
