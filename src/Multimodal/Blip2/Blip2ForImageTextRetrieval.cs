using Multimodal.Common;
using Multimodal.Loading;
using Multimodal.QFormer;
using Multimodal.Vision;

namespace Multimodal.Blip2;

/// <summary>Image–text matching: (B, 2) logits (column 1 = "match") and the Q-Former output over [queries; text].</summary>
public sealed record Blip2ItmOutput(Tensor Logits, Tensor QFormerLastHiddenState) : IDisposable
{
    /// <inheritdoc/>
    public void Dispose() { Logits.Dispose(); QFormerLastHiddenState.Dispose(); }
}

/// <summary>Image–text contrastive scores: for every image and text, the best cosine similarity over the
/// image's query embeddings (no temperature, as transformers v4.45.1 returns them).</summary>
public sealed record Blip2ItcOutput(Tensor LogitsPerImage, Tensor LogitsPerText, Tensor ImageEmbeds, Tensor TextEmbeds,
    Tensor VisionLastHiddenState, Tensor TextLastHiddenState) : IDisposable
{
    /// <inheritdoc/>
    public void Dispose()
    {
        foreach (var t in new[] { LogitsPerImage, LogitsPerText, ImageEmbeds, TextEmbeds, VisionLastHiddenState, TextLastHiddenState }) t.Dispose();
    }
}

/// <summary>transformers v4.45.1 <c>Blip2ForImageTextRetrieval</c> (modeling_blip_2.py), with the outputs of
/// <c>Blip2VisionModelWithProjection</c> and <c>Blip2TextModelWithProjection</c>, which share its weights:
/// BLIP-2's first-stage model (Li et al. 2023) scoring how well a text describes an image — by the ITM head
/// over queries attending jointly with the text, or by contrastive embeddings.</summary>
public sealed class Blip2ForImageTextRetrieval : nn.Module
{
    [ComponentName(Name = "vision_model")] private readonly Blip2VisionModel _visionModel;
    [ComponentName(Name = "query_tokens")] private readonly Parameter _queryTokens;
    [ComponentName(Name = "embeddings")] private readonly QFormerTextEmbeddings _embeddings;
    [ComponentName(Name = "qformer")] private readonly QFormerModel _qformer;
    [ComponentName(Name = "vision_projection")] private readonly Linear _visionProjection;
    [ComponentName(Name = "text_projection")] private readonly Linear _textProjection;
    [ComponentName(Name = "itm_head")] private readonly Linear _itmHead;

    /// <summary>The config the model was built from: normalized, validated, upstream's default for every key the file omits.</summary>
    public Blip2Config Config { get; }

    /// <summary>The device the parameters were built on (CPU or CUDA); inputs are moved to it.</summary>
    public Device Device { get; }

    /// <summary>The parameters' dtype (float32, float16 or bfloat16); inputs are cast to it.</summary>
    public ScalarType DType { get; }

    /// <summary>Builds the model (weights to be loaded).</summary>
    public Blip2ForImageTextRetrieval(Blip2Config config, Device? device = null, ScalarType? dtype = null) : base(nameof(Blip2ForImageTextRetrieval))
    {
        Config = config.Normalize();
        if (!Config.QformerConfig.UseQformerTextInput)
            throw new NotSupportedException("Image–text retrieval needs qformer_config.use_qformer_text_input = true (the Q-Former's text path).");
        Device = DeviceCheck.Resolve(device);
        DType = DeviceCheck.Resolve(dtype);
        var q = Config.QformerConfig;
        _visionModel = new Blip2VisionModel(Config.VisionConfig, Device, DType);
        _queryTokens = new Parameter(zeros(1, Config.NumQueryTokens, q.HiddenSize, dtype: DType, device: Device), requires_grad: false);
        _embeddings = new QFormerTextEmbeddings(q, Device, DType);
        _qformer = new QFormerModel(q, Device, DType);
        _visionProjection = Uninitialized.Linear(q.HiddenSize, Config.ImageTextHiddenSize, device: Device, dtype: DType);
        _textProjection = Uninitialized.Linear(q.HiddenSize, Config.ImageTextHiddenSize, device: Device, dtype: DType);
        _itmHead = Uninitialized.Linear(q.HiddenSize, 2, device: Device, dtype: DType);
        RegisterComponents();
        eval();
        foreach (var p in parameters()) p.requires_grad = false;
    }

    /// <summary>Loads a BLIP-2 retrieval checkpoint folder (e.g. Salesforce/blip2-itm-vit-g).</summary>
    public static Blip2ForImageTextRetrieval FromPretrained(string folder, Device? device = null, ScalarType? dtype = null,
        IProgress<LoadProgress>? progress = null, string? revision = null)
    {
        using var checkpoint = CheckpointFolder.Open(HubCache.Resolve(folder, revision));
        var config = Blip2Config.Load(checkpoint.ConfigPath);
        config.RequireArchitecture(checkpoint.ConfigPath, nameof(Blip2ForImageTextRetrieval), "Blip2ForImageTextRetrieval",
            "Blip2TextModelWithProjection", "Blip2VisionModelWithProjection");
        return StateDictLoader.BuildAndLoad(d => new Blip2ForImageTextRetrieval(config, d, dtype),
            device, checkpoint, new WeightMap(), nameof(Blip2ForImageTextRetrieval), progress);
    }

    /// <summary>ITM for pairs: row k of the images with row k of the texts. (B, 3, H, W) + (B, T) → (B, 2).</summary>
    public Blip2ItmOutput ImageTextMatching(Tensor pixelValues, Tensor inputIds, Tensor? attentionMask = null)
    {
        using var inference = inference_mode();
        using var scope = NewDisposeScope();
        var image = _visionModel.forward(ToImages(pixelValues)).LastHiddenState;
        var (ids, mask) = Text(inputIds, attentionMask, image.size(0));
        var queries = _queryTokens.expand(image.size(0), -1, -1);
        // Queries and text attend to each other; only the queries see the image.
        var fullMask = cat([ones(queries.size(0), queries.size(1), ScalarType.Int64, Device), mask], 1);
        var hidden = _qformer.Forward(_embeddings.Forward(ids, queries), image, queries.size(1), Attention.PaddingMask(fullMask, DType));
        var logits = _itmHead.forward(hidden.narrow(1, 0, queries.size(1))).mean([1]);
        return new Blip2ItmOutput(logits.MoveToOuterDisposeScope(), hidden.MoveToOuterDisposeScope());
    }

    /// <summary>ITC for every image against every text: (Bi, Bt) best-query cosine similarities.</summary>
    public Blip2ItcOutput ImageTextContrastive(Tensor pixelValues, Tensor inputIds, Tensor? attentionMask = null)
    {
        using var inference = inference_mode();
        using var scope = NewDisposeScope();
        var vision = _visionModel.forward(ToImages(pixelValues)).LastHiddenState;
        var imageEmbeds = ProjectQueries(vision);                                       // (Bi, Q, E)
        var (textHidden, textEmbeds) = TextPass(inputIds, attentionMask);
        var cls = textEmbeds.select(1, 0);                                              // (Bt, E)
        var perImage = imageEmbeds.matmul(cls.t()).amax([1]);                           // (Bi, Bt)
        var output = new Blip2ItcOutput(perImage, perImage.t().contiguous(), imageEmbeds, cls.contiguous(), vision, textHidden);
        foreach (var t in new[] { output.LogitsPerImage, output.LogitsPerText, output.ImageEmbeds, output.TextEmbeds, output.VisionLastHiddenState, output.TextLastHiddenState })
            t.MoveToOuterDisposeScope();
        return output;
    }

    /// <summary><c>Blip2VisionModelWithProjection.image_embeds</c>: normalized per-query embeddings (B, Q, E).</summary>
    public Tensor EmbedImages(Tensor pixelValues)
    {
        using var inference = inference_mode();
        using var scope = NewDisposeScope();
        return ProjectQueries(_visionModel.forward(ToImages(pixelValues)).LastHiddenState).MoveToOuterDisposeScope();
    }

    /// <summary><c>Blip2TextModelWithProjection.text_embeds</c>: normalized embeddings of every token (B, T, E);
    /// the first token's is the text's ITC embedding.</summary>
    public Tensor EmbedTexts(Tensor inputIds, Tensor? attentionMask = null)
    {
        using var inference = inference_mode();
        using var scope = NewDisposeScope();
        return TextPass(inputIds, attentionMask).Embeds.MoveToOuterDisposeScope();
    }

    private Tensor ProjectQueries(Tensor vision)
    {
        var queries = _qformer.Forward(_queryTokens.expand(vision.size(0), -1, -1), vision, Config.NumQueryTokens);
        return nn.functional.normalize(_visionProjection.forward(queries), dim: -1);
    }

    // The Q-Former's text-only pass (query length 0): no image, the text FFN in every layer.
    private (Tensor Hidden, Tensor Embeds) TextPass(Tensor inputIds, Tensor? attentionMask)
    {
        var (ids, mask) = Text(inputIds, attentionMask, inputIds.size(0));
        var hidden = _qformer.Forward(_embeddings.Forward(ids), null, 0, Attention.PaddingMask(mask, DType));
        return (hidden, nn.functional.normalize(_textProjection.forward(hidden), dim: -1));
    }

    private Tensor ToImages(Tensor pixelValues)
    {
        Shape.Require(pixelValues, "pixel_values", -1, 3, Config.VisionConfig.ImageSize, Config.VisionConfig.ImageSize);
        return pixelValues.to(DType, Device);
    }

    private (Tensor Ids, Tensor Mask) Text(Tensor inputIds, Tensor? attentionMask, long rows)
    {
        Shape.Require(inputIds, "input_ids", rows, -1);
        if (inputIds.numel() > 0 && (inputIds.min().item<long>() < 0 || inputIds.max().item<long>() >= Config.QformerConfig.VocabSize))
            throw new ArgumentException($"input_ids must lie in [0, {Config.QformerConfig.VocabSize}).", nameof(inputIds));
        var ids = inputIds.to(ScalarType.Int64, Device);
        var mask = attentionMask?.to(ScalarType.Int64, Device) ?? ones_like(ids);
        Shape.Require(mask, "attention_mask", ids.size(0), ids.size(1));
        return (ids, mask);
    }
}
