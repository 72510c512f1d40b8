using Multimodal.Common;
using Multimodal.Generation;
using Multimodal.Loading;
using Multimodal.Processing;

namespace Multimodal.Flamingo;

/// <summary>OpenFlamingo end to end: interleaved prompt → images through open_clip's transform, text through
/// the GPT-NeoX tokenizer with OpenFlamingo's tokens → <see cref="FlamingoModel.Generate(Tensor, Tensor, Tensor?, GenerationOptions?, CancellationToken)"/> → text.</summary>
public sealed class FlamingoPipeline(FlamingoModel model, ITextTokenizer tokenizer, OpenClipImageProcessor imageProcessor) : InterleavedPipeline
{

    /// <summary>The model.</summary>
    public FlamingoModel Model { get; } = model;

    /// <summary>The tokenizer (must know <c>&lt;image&gt;</c> and <c>&lt;|endofchunk|&gt;</c>).</summary>
    public ITextTokenizer Tokenizer { get; } = tokenizer;

    /// <summary>The image processor.</summary>
    public OpenClipImageProcessor ImageProcessor { get; } = imageProcessor;

    /// <summary>Loads a Flamingo folder (config.json, weights, and the language model's <c>tokenizer.json</c>), or a
    /// hub id in the local Hugging Face cache at <paramref name="revision"/>.</summary>
    public static FlamingoPipeline FromPretrained(string folder, Device? device = null, ScalarType? dtype = null,
        IProgress<LoadProgress>? progress = null, string? revision = null)
    {
        folder = HubCache.Resolve(folder, revision);
        return Ownership.DisposeOnFailure(FlamingoModel.FromPretrained(folder, device, dtype, progress), model =>
        {
            var tokenizer = Gpt2Tokenizer.FromTokenizerJson(Path.Combine(folder, "tokenizer.json"), ["<|endofchunk|>", "<image>", "<PAD>"], "<PAD>");
            return new FlamingoPipeline(model, tokenizer, new OpenClipImageProcessor(model.Config.ClipModelCfg.Vision.ImageSize));
        });
    }

    /// <summary>This pipeline as a <see cref="Microsoft.Extensions.AI.IChatClient"/> (the pipeline keeps owning the model).</summary>
    public FlamingoChatClient AsChatClient(string? modelId = null) => new(this, modelId);

    private protected override ITextTokenizer StreamTokenizer => Tokenizer;

    private protected override int BeamsOf(GenerationOptions options) => options.NumBeams;

    private protected override TextResult Generate(InterleavedPrompt prompt, GenerationOptions? options, Action<long[], bool[]>? onTokens, CancellationToken cancellationToken)
    {
        var images = prompt.Images;
        if (images.Count == 0) throw new ArgumentException("The prompt has no image.", nameof(prompt));
        string text = prompt.ToOpenFlamingoText();
        TextLimit.Check(text, Model.Config.LangEncoderConfig?.ContextLength ?? TextLimit.DefaultPositions, Tokenizer);
        using var scope = NewDisposeScope();
        var ids = Tokenizer.Encode(text, addSpecialTokens: false).ToArray();
        int media = ids.Count(id => id == Model.Config.MediaTokenId);
        if (media != images.Count)
            throw new ArgumentException($"The prompt's text holds {media} <image> tokens for {images.Count} images.", nameof(prompt));
        var pixels = ImageProcessor.Preprocess(images);                                 // (T, 3, H, W)
        var visionX = pixels.view(1, images.Count, 1, pixels.shape[1], pixels.shape[2], pixels.shape[3]);
        using var output = Model.Generate(visionX, tensor(ids).unsqueeze(0), null, options ?? new GenerationOptions(),
            Decode, onTokens, cancellationToken);
        var row = output.Sequences[0];
        return new TextResult(Tokenizer.Decode(row.Skip(ids.Length)).Trim(), row, output.Scores[0], output.FinishReasons[0], ids.Length, output.NewTokens[0]);
    }

    private string Decode(IReadOnlyList<long> ids) => Tokenizer.Decode(ids);

    private protected override void DisposeModel() => Model.Dispose();
}
