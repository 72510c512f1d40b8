using Multimodal.Common;
using Multimodal.Generation;
using Multimodal.Loading;
using Multimodal.Processing;

namespace Multimodal.Blip2;

/// <summary>Image–text retrieval with a BLIP-2 retrieval checkpoint (e.g. Salesforce/blip2-itm-vit-g):
/// match probabilities, similarity matrices and normalized embeddings.</summary>
/// <remarks>Thread-safe: concurrent calls run one at a time, so N concurrent calls give what N sequential
/// calls give. Disposing waits for the call in progress.</remarks>
/// <example><code>
/// using var itm = Blip2Retriever.FromPretrained("blip2-itm-vit-g");
/// float[] p = await itm.MatchAsync(ImageDecoder.Decode("cat.jpg"), ["a cat on a sofa", "a dog in the snow"]);
/// </code></example>
public sealed class Blip2Retriever(Blip2ForImageTextRetrieval model, BlipImageProcessor imageProcessor, BertWordPieceTokenizer tokenizer) : IDisposable
{
    private readonly CallGate _gate = new();

    /// <summary>The model the retriever runs: image and text embeddings, the ITM and ITC heads.</summary>
    public Blip2ForImageTextRetrieval Model { get; } = model;

    /// <summary>The image processor.</summary>
    public BlipImageProcessor ImageProcessor { get; } = imageProcessor;

    /// <summary>The Q-Former's text tokenizer.</summary>
    public BertWordPieceTokenizer Tokenizer { get; } = tokenizer;

    /// <summary>Loads a retrieval checkpoint folder: config, weights, <c>preprocessor_config.json</c>, <c>vocab.txt</c>; or a
    /// hub id (Salesforce/blip2-itm-vit-g) in the local Hugging Face cache at <paramref name="revision"/>.</summary>
    public static Blip2Retriever FromPretrained(string folder, Device? device = null, ScalarType? dtype = null,
        IProgress<LoadProgress>? progress = null, string? revision = null)
    {
        folder = HubCache.Resolve(folder, revision);
        return Ownership.DisposeOnFailure(Blip2ForImageTextRetrieval.FromPretrained(folder, device, dtype, progress),
            model => new Blip2Retriever(model, BlipImageProcessor.FromFolder(folder), BertWordPieceTokenizer.FromVocab(Path.Combine(folder, "vocab.txt"))));
    }

    /// <summary>Upper bound on decoded image pixels for images given as bytes (decompression bombs are refused).</summary>
    public long MaxImagePixels { get; init; } = ImageDecoder.DefaultMaxPixels;

    /// <summary>Text and image embeddings as a <see cref="Microsoft.Extensions.AI.IEmbeddingGenerator{TInput, TEmbedding}"/>
    /// (the retriever keeps owning the model).</summary>
    public Blip2EmbeddingGenerator AsEmbeddingGenerator(string? modelId = null) => new(this, modelId);

    /// <summary>Probability that each text describes the image (ITM head, softmax column "match").</summary>
    public Task<float[]> MatchAsync(DecodedImage image, IReadOnlyList<string> texts, CancellationToken cancellationToken = default) =>
        Run(() =>
        {
            var pixels = ImageProcessor.Preprocess(Enumerable.Repeat(image, texts.Count).ToList());
            var (ids, mask) = Tokenize(texts);
            using var itm = Model.ImageTextMatching(pixels, ids, mask);
            return itm.Logits.softmax(-1).select(1, 1).to(ScalarType.Float32).cpu().data<float>().ToArray();
        }, cancellationToken);

    /// <summary>(images × texts) cosine similarities: for each pair, the best over the image's query embeddings.</summary>
    public Task<float[,]> SimilarityAsync(IReadOnlyList<DecodedImage> images, IReadOnlyList<string> texts, CancellationToken cancellationToken = default) =>
        Run(() =>
        {
            var (ids, mask) = Tokenize(texts);
            using var itc = Model.ImageTextContrastive(ImageProcessor.Preprocess(images), ids, mask);
            var flat = itc.LogitsPerImage.to(ScalarType.Float32).cpu().data<float>().ToArray();
            var matrix = new float[images.Count, texts.Count];
            Buffer.BlockCopy(flat, 0, matrix, 0, flat.Length * sizeof(float));
            return matrix;
        }, cancellationToken);

    /// <summary>The image's normalized embeddings, one per query token (num_query_tokens × image_text_hidden_size).</summary>
    public async Task<float[][]> EmbedImageAsync(DecodedImage image, CancellationToken cancellationToken = default) =>
        (await EmbedImagesAsync([image], cancellationToken).ConfigureAwait(false))[0];

    /// <summary>Batched <see cref="EmbedImageAsync"/>: per image, per query token, a normalized vector.</summary>
    public Task<float[][][]> EmbedImagesAsync(IReadOnlyList<DecodedImage> images, CancellationToken cancellationToken = default) =>
        Run(() =>
        {
            using var embeds = Model.EmbedImages(ImageProcessor.Preprocess(images)).to(ScalarType.Float32).cpu();
            return Enumerable.Range(0, images.Count).Select(i =>
                Enumerable.Range(0, (int)embeds.size(1)).Select(q => embeds[i, q].data<float>().ToArray()).ToArray()).ToArray();
        }, cancellationToken);

    /// <summary>The text's normalized embedding (its first token's, as ITC uses it).</summary>
    public async Task<float[]> EmbedTextAsync(string text, CancellationToken cancellationToken = default) =>
        (await EmbedTextsAsync([text], cancellationToken).ConfigureAwait(false))[0];

    /// <summary>Batched <see cref="EmbedTextAsync"/>.</summary>
    public Task<float[][]> EmbedTextsAsync(IReadOnlyList<string> texts, CancellationToken cancellationToken = default) =>
        Run(() =>
        {
            var (ids, mask) = Tokenize(texts);
            using var embeds = Model.EmbedTexts(ids, mask).to(ScalarType.Float32).cpu();
            return Enumerable.Range(0, texts.Count).Select(t => embeds[t, 0].data<float>().ToArray()).ToArray();
        }, cancellationToken);

    // BERT pads on the right.
    private (Tensor Ids, Tensor Mask) Tokenize(IReadOnlyList<string> texts)
    {
        if (texts.Count == 0) throw new ArgumentException("At least one text is needed.", nameof(texts));
        foreach (var text in texts) TextLimit.Check(text, Model.Config.QformerConfig.MaxPositionEmbeddings, Tokenizer, "A text");
        var rows = texts.Select(t => Tokenizer.Encode(t)).ToList();
        int width = rows.Max(r => r.Count);
        long pad = Tokenizer.PadTokenId ?? 0;
        var ids = rows.SelectMany(r => r.Concat(Enumerable.Repeat(pad, width - r.Count))).ToArray();
        var mask = rows.SelectMany(r => Enumerable.Repeat(1L, r.Count).Concat(Enumerable.Repeat(0L, width - r.Count))).ToArray();
        return (tensor(ids, [rows.Count, width]), tensor(mask, [rows.Count, width]));
    }

    private Task<T> Run<T>(Func<T> work, CancellationToken cancellationToken) =>
        _gate.RunAsync(() =>
        {
            using var scope = NewDisposeScope();
            return work();
        }, cancellationToken);

    /// <summary>Waits for the call in progress, then frees the model.</summary>
    public void Dispose() => _gate.Close(Model.Dispose);
}
