using Microsoft.Extensions.AI;
using Multimodal.Processing;

namespace Multimodal.Blip2;

/// <summary><see cref="IEmbeddingGenerator{TInput, TEmbedding}"/> over a <see cref="Blip2Retriever"/>: BLIP-2's
/// contrastive (ITC) embeddings of texts and of images, unit length, in one space.</summary>
/// <remarks>
/// A text embedding is one vector of <c>image_text_hidden_size</c> (256 for blip2-itm-vit-g): the projected
/// first token, as ITC uses it. An image has one unit vector per query token; its embedding is those
/// <c>num_query_tokens</c> rows one after another (32 × 256 = 8192 floats). BLIP-2 scores an image against a
/// text by the best row, which <see cref="Similarity"/> computes; a vector store that takes one vector per
/// item can store each row as its own entry pointing to the image.
/// The retriever owns the model; disposing the generator does nothing.
/// </remarks>
public sealed class Blip2EmbeddingGenerator : IEmbeddingGenerator<string, Embedding<float>>, IEmbeddingGenerator<DataContent, Embedding<float>>
{
    private readonly Blip2Retriever _retriever;
    private readonly EmbeddingGeneratorMetadata _metadata;

    /// <summary>Wraps a loaded retriever (it stays owned by the caller).</summary>
    public Blip2EmbeddingGenerator(Blip2Retriever retriever, string? modelId = null)
    {
        _retriever = retriever;
        var config = retriever.Model.Config;
        _metadata = new EmbeddingGeneratorMetadata("multimodal", null,
            modelId ?? (config.NameOrPath is { Length: > 0 } name ? name : "blip2-itm"), config.ImageTextHiddenSize);
    }

    /// <summary>Rows of an image embedding (the model's query tokens).</summary>
    public int ImageRows => _retriever.Model.Config.NumQueryTokens;

    /// <summary>Embeds texts: one unit vector each.</summary>
    public async Task<GeneratedEmbeddings<Embedding<float>>> GenerateAsync(IEnumerable<string> values,
        EmbeddingGenerationOptions? options = null, CancellationToken cancellationToken = default)
    {
        var texts = values.ToList();
        var vectors = await _retriever.EmbedTextsAsync(texts, cancellationToken).ConfigureAwait(false);
        return Wrap(vectors);
    }

    /// <summary>Embeds images (bytes with an image media type): per image its query rows, concatenated.</summary>
    /// <exception cref="NotSupportedException">a value is not an image.</exception>
    public async Task<GeneratedEmbeddings<Embedding<float>>> GenerateAsync(IEnumerable<DataContent> values,
        EmbeddingGenerationOptions? options = null, CancellationToken cancellationToken = default)
    {
        var images = values.Select(d => d.HasTopLevelMediaType("image")
            ? ImageDecoder.Decode(d.Data.ToArray(), $"image ({d.MediaType})", _retriever.MaxImagePixels)
            : throw new NotSupportedException($"DataContent with media type '{d.MediaType}' is not an image.")).ToList();
        var rows = await _retriever.EmbedImagesAsync(images, cancellationToken).ConfigureAwait(false);
        return Wrap(rows.Select(r => r.SelectMany(v => v).ToArray()));
    }

    /// <summary>BLIP-2's image–text similarity: the best dot product of the text vector with any of the image's rows.</summary>
    public static float Similarity(ReadOnlySpan<float> imageEmbedding, ReadOnlySpan<float> textEmbedding)
    {
        int d = textEmbedding.Length;
        if (d == 0 || imageEmbedding.Length % d != 0)
            throw new ArgumentException($"An image embedding ({imageEmbedding.Length} floats) must be whole rows of the text embedding's {d}.");
        float best = float.NegativeInfinity;
        for (int row = 0; row < imageEmbedding.Length; row += d)
        {
            float dot = 0;
            for (int i = 0; i < d; i++) dot += imageEmbedding[row + i] * textEmbedding[i];
            best = Math.Max(best, dot);
        }
        return best;
    }

    private static GeneratedEmbeddings<Embedding<float>> Wrap(IEnumerable<float[]> vectors) =>
        new(vectors.Select(v => new Embedding<float>(v) { CreatedAt = DateTimeOffset.UtcNow }));

    /// <inheritdoc/>
    public object? GetService(Type serviceType, object? serviceKey = null) =>
        serviceKey is not null ? null
        : serviceType == typeof(EmbeddingGeneratorMetadata) ? _metadata
        : serviceType.IsInstanceOfType(this) ? this
        : null;

    /// <summary>Does nothing: the retriever owns the model.</summary>
    public void Dispose() => GC.SuppressFinalize(this);
}
