using Multimodal.Common;
using Multimodal.Generation;
using Multimodal.Loading;
using Multimodal.Processing;

namespace Multimodal.Flamingo;

/// <summary>A generated continuation.</summary>
/// <param name="Text">the new text, special tokens skipped.</param>
/// <param name="Ids">prompt and new ids as upstream returns them.</param>
/// <param name="Score">the sequence score.</param>
public sealed record InterleavedResult(string Text, IReadOnlyList<long> Ids, double Score);

/// <summary>OpenFlamingo end to end: interleaved prompt → images through open_clip's transform, text through
/// the GPT-NeoX tokenizer with OpenFlamingo's tokens → <see cref="FlamingoModel.Generate(Tensor, Tensor, Tensor?, GenerationOptions?, CancellationToken)"/> → text.</summary>
public sealed class FlamingoPipeline(FlamingoModel model, ITextTokenizer tokenizer, OpenClipImageProcessor imageProcessor) : IDisposable
{
    /// <summary>The model.</summary>
    public FlamingoModel Model { get; } = model;

    /// <summary>The tokenizer (must know <c>&lt;image&gt;</c> and <c>&lt;|endofchunk|&gt;</c>).</summary>
    public ITextTokenizer Tokenizer { get; } = tokenizer;

    /// <summary>The image processor.</summary>
    public OpenClipImageProcessor ImageProcessor { get; } = imageProcessor;

    /// <summary>Loads a Flamingo folder (config.json, weights, and the language model's <c>tokenizer.json</c>).</summary>
    public static FlamingoPipeline FromFolder(string folder, Device? device = null, ScalarType? dtype = null, IProgress<LoadProgress>? progress = null)
    {
        return Ownership.DisposeOnFailure(FlamingoModel.FromFolder(folder, device, dtype, progress), model =>
        {
            var tokenizer = Gpt2Tokenizer.FromTokenizerJson(Path.Combine(folder, "tokenizer.json"), ["<|endofchunk|>", "<image>", "<PAD>"], "<PAD>");
            return new FlamingoPipeline(model, tokenizer, new OpenClipImageProcessor(model.Config.ClipModelCfg.Vision.ImageSize));
        });
    }

    /// <summary>Continues an interleaved prompt (one image per <see cref="ImagePart"/>).</summary>
    public Task<InterleavedResult> GenerateAsync(InterleavedPrompt prompt, GenerationOptions? options = null, CancellationToken cancellationToken = default) =>
        Task.Run(() =>
        {
            var images = prompt.Images;
            if (images.Count == 0) throw new ArgumentException("The prompt has no image.", nameof(prompt));
            using var scope = NewDisposeScope();
            var ids = Tokenizer.Encode(prompt.ToOpenFlamingoText(), addSpecialTokens: false).ToArray();
            int media = ids.Count(id => id == Model.Config.MediaTokenId);
            if (media != images.Count)
                throw new ArgumentException($"The prompt's text holds {media} <image> tokens for {images.Count} images.", nameof(prompt));
            var pixels = ImageProcessor.Preprocess(images);                                 // (T, 3, H, W)
            var visionX = pixels.view(1, images.Count, 1, pixels.shape[1], pixels.shape[2], pixels.shape[3]);
            using var output = Model.Generate(visionX, tensor(ids).unsqueeze(0), null, options ?? new GenerationOptions(),
                Decode, null, cancellationToken);
            var row = output.Sequences[0];
            return new InterleavedResult(Tokenizer.Decode(row.Skip(ids.Length)), row, output.Scores[0]);
        }, cancellationToken);

    private string Decode(IReadOnlyList<long> ids) => Tokenizer.Decode(ids);

    /// <inheritdoc/>
    public void Dispose() => Model.Dispose();
}

/// <summary>IDEFICS end to end: interleaved prompt → IDEFICS' image processor and prompt layout (with its
/// image attention mask) → <see cref="IdeficsForVisionText2Text.Generate"/> → text.</summary>
public sealed class IdeficsPipeline(IdeficsForVisionText2Text model, LlamaSentencePieceTokenizer tokenizer, IdeficsImageProcessor imageProcessor) : IDisposable
{
    /// <summary>The model.</summary>
    public IdeficsForVisionText2Text Model { get; } = model;

    /// <summary>The tokenizer (with <c>&lt;fake_token_around_image&gt;</c> and <c>&lt;image&gt;</c>).</summary>
    public LlamaSentencePieceTokenizer Tokenizer { get; } = tokenizer;

    /// <summary>The image processor.</summary>
    public IdeficsImageProcessor ImageProcessor { get; } = imageProcessor;

    /// <summary>Loads an IDEFICS folder: config, weights, <c>tokenizer.model</c>, <c>preprocessor_config.json</c>.</summary>
    public static IdeficsPipeline FromPretrained(string folder, Device? device = null, ScalarType? dtype = null, IProgress<LoadProgress>? progress = null)
    {
        return Ownership.DisposeOnFailure(IdeficsForVisionText2Text.FromPretrained(folder, device, dtype, progress), model =>
        {
            var tokenizer = LlamaSentencePieceTokenizer.FromModel(Path.Combine(folder, "tokenizer.model"),
                ["<fake_token_around_image>", "<image>", "<end_of_utterance>"]);
            return new IdeficsPipeline(model, tokenizer, IdeficsImageProcessor.FromFolder(folder));
        });
    }

    /// <summary>Continues an interleaved prompt.</summary>
    public Task<InterleavedResult> GenerateAsync(InterleavedPrompt prompt, GenerationOptions? options = null, CancellationToken cancellationToken = default) =>
        Task.Run(() =>
        {
            var images = prompt.Images;
            if (images.Count == 0) throw new ArgumentException("The prompt has no image.", nameof(prompt));
            using var scope = NewDisposeScope();
            long fake = Tokenizer.Encode("<fake_token_around_image>", false)[0], image = Tokenizer.Encode("<image>", false)[0];
            var ids = IdeficsPromptLayout.Ids(prompt, t => Tokenizer.Encode(t, addSpecialTokens: false), Tokenizer.BosTokenId, fake, image);
            var rows = IdeficsPromptLayout.ImageAttentionMask(ids, image, Model.Config.EosTokenId, images.Count);
            var mask = tensor(Enumerable.Range(0, ids.Length).SelectMany(t => Enumerable.Range(0, images.Count).Select(k => rows[t, k])).ToArray(),
                [1, ids.Length, images.Count]);
            var pixels = ImageProcessor.Preprocess(images).unsqueeze(0);                      // (1, N, 3, H, W)
            using var output = Model.Generate(tensor(ids).unsqueeze(0), ones(1, ids.Length, ScalarType.Int64), pixels, mask,
                options, t => Tokenizer.Decode(t), null, cancellationToken);
            var row = output.Sequences[0];
            return new InterleavedResult(Tokenizer.Decode(row.Skip(ids.Length)), row, output.Scores[0]);
        }, cancellationToken);

    /// <inheritdoc/>
    public void Dispose() => Model.Dispose();
}
