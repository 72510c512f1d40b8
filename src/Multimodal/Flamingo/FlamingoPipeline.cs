using Multimodal.Common;
using Multimodal.Generation;
using Multimodal.Loading;
using Multimodal.Processing;

namespace Multimodal.Flamingo;

/// <summary>OpenFlamingo end to end: interleaved prompt → images through open_clip's transform, text through
/// the language model's tokenizer with OpenFlamingo's tokens (GPT-NeoX's <c>tokenizer.json</c> for MPT and RedPajama,
/// LLaMA's <c>tokenizer.model</c> for OpenFlamingo-9B-deprecated and Med-Flamingo, which puts BOS in front) → <see cref="FlamingoModel.Generate(Tensor, Tensor, Tensor?, GenerationOptions?, CancellationToken)"/> → text.</summary>
public sealed class FlamingoPipeline(FlamingoModel model, ITextTokenizer tokenizer, OpenClipImageProcessor imageProcessor) : InterleavedPipeline, IVisionLanguageModel
{

    /// <summary>The model the façade drives: its forward pass, generation from explicit tensors, its generation defaults.</summary>
    public FlamingoModel Model { get; } = model;

    /// <summary>The tokenizer (must know <c>&lt;image&gt;</c> and <c>&lt;|endofchunk|&gt;</c>).</summary>
    public ITextTokenizer Tokenizer { get; } = tokenizer;

    /// <summary>The image processor.</summary>
    public OpenClipImageProcessor ImageProcessor { get; } = imageProcessor;

    /// <summary>Loads a Flamingo folder (config.json, weights, and the language model's <c>tokenizer.json</c> or
    /// <c>tokenizer.model</c>), or a hub id in the local Hugging Face cache at <paramref name="revision"/>.</summary>
    /// <exception cref="ConfigException">the tokenizer's ids for OpenFlamingo's tokens are not the config's.</exception>
    /// <param name="folder">the folder, or a hub id in the local Hugging Face cache.</param>
    /// <param name="device">CPU (default) or CUDA.</param>
    /// <param name="dtype">Float32 (default), Float16 or BFloat16.</param>
    /// <param name="progress">receives a report after each weight tensor.</param>
    /// <param name="revision">with a hub id: the branch, tag or commit (default main).</param>
    /// <param name="quantization">weight-only quantization of the language model (see <see cref="WeightQuantization"/>).</param>
    /// <param name="batching">dynamic batching of concurrent calls (see <see cref="InterleavedPipeline.Batching"/>); null: none.</param>
    public static FlamingoPipeline FromPretrained(string folder, Device? device = null, ScalarType? dtype = null,
        IProgress<LoadProgress>? progress = null, string? revision = null, BatchingOptions? batching = null,
        WeightQuantization quantization = WeightQuantization.None)
    {
        batching?.Validate();
        folder = HubCache.Resolve(folder, revision);
        return Ownership.DisposeOnFailure(FlamingoModel.FromPretrained(folder, device, dtype, progress, quantization: quantization), model =>
        {
            var tokenizer = OpenTokenizer(folder);
            CheckTokenIds(tokenizer, model.Config, folder);
            return new FlamingoPipeline(model, tokenizer, new OpenClipImageProcessor(model.Config.ClipModelCfg.Vision.ImageSize)) { Batching = batching };
        });
    }

    // create_model_and_transforms adds these to the language model's tokenizer, in this order, after its vocabulary.
    private static readonly string[] OpenFlamingoTokens = ["<|endofchunk|>", "<image>", "<PAD>"];

    private static ITextTokenizer OpenTokenizer(string folder)
    {
        string sentencePiece = Path.Combine(folder, "tokenizer.model");
        return File.Exists(sentencePiece)
            ? LlamaSentencePieceTokenizer.FromModel(sentencePiece, OpenFlamingoTokens, "<PAD>")
            : Gpt2Tokenizer.FromTokenizerJson(Path.Combine(folder, "tokenizer.json"), OpenFlamingoTokens, "<PAD>");
    }

    // A tokenizer of another vocabulary would feed the wrong rows without any error: its ids must be the config's.
    private static void CheckTokenIds(ITextTokenizer tokenizer, FlamingoConfig config, string folder)
    {
        foreach (var (token, expected) in new[] { ("<|endofchunk|>", config.EocTokenId), ("<image>", config.MediaTokenId) })
        {
            var ids = tokenizer.Encode(token, addSpecialTokens: false);
            if (ids.Count != 1 || ids[0] != expected)
                throw new ConfigException(Path.Combine(folder, "config.json"),
                    $"the tokenizer gives {token} the ids [{string.Join(", ", ids)}], but the config's id is {expected}: the tokenizer and the model do not belong together.");
        }
    }

    /// <summary>This pipeline as a <see cref="Microsoft.Extensions.AI.IChatClient"/> (the pipeline keeps owning the model).</summary>
    public FlamingoChatClient AsChatClient(string? modelId = null) => new(this, modelId);

    private protected override ITextTokenizer StreamTokenizer => Tokenizer;

    /// <inheritdoc/>
    public int? ContextLength => Model.Config.LangEncoderConfig?.ContextLength;

    Microsoft.Extensions.AI.IChatClient IVisionLanguageModel.AsChatClient(string? modelId) => AsChatClient(modelId);

    // OpenFlamingo's own evaluation prompts: "<image>An image of" for captions (the README's example),
    // "<image>Question:… Short answer:" for VQA.
    private protected override InterleavedPrompt SingleImagePrompt(DecodedImage image, string? question) =>
        InterleavedPrompt.FewShot([], image, question is null ? "An image of" : $"Question:{question} Short answer:");

    // OpenFlamingo publishes no generation config: the options alone decide.
    private protected override GenerationCall Call(GenerationOptions? options, CancellationToken cancellationToken) =>
        GenerationCall.Resolve(options, null, cancellationToken) with { Decode = Decode };

    private protected override IReadOnlyList<TextResult> Generate(IReadOnlyList<InterleavedPrompt> prompts, GenerationCall call,
        Action<int, TextResult>? onRowResult)
    {
        int images = prompts.Count > 0 ? prompts[0].Images.Count : throw new ArgumentException("No prompt was given.", nameof(prompts));
        var rows = prompts.Select(Tokenize).ToList();
        if (prompts.Any(p => p.Images.Count != images))
            throw new ArgumentException("Every prompt of a batch needs the same number of images (OpenFlamingo's vision_x is one tensor).", nameof(prompts));
        using var scope = NewDisposeScope();
        var (ids, mask, padding) = LeftPad(rows, Model.Config.PadTokenId ?? Model.Config.EocTokenId);
        int width = (int)ids.size(1);
        call = call.AnsweringRows(onRowResult, (row, alone) => RowResult(alone, 0, width, padding[row], Tokenizer));
        var pixels = ImageProcessor.Preprocess(prompts.SelectMany(p => p.Images).ToList());        // (B·T, 3, H, W)
        var visionX = pixels.view(prompts.Count, images, 1, pixels.size(1), pixels.size(2), pixels.size(3));
        using var output = Model.Generate(visionX, ids, mask, call);
        return Enumerable.Range(0, prompts.Count).Select(r => RowResult(output, r, width, padding[r], Tokenizer)).ToList();
    }

    // OpenFlamingo tokenizes with the tokenizer's defaults: LLaMA's puts <s> before the first <image>; GPT-NeoX's adds nothing.
    private long[] Tokenize(InterleavedPrompt prompt)
    {
        if (prompt.Images.Count == 0) throw new ArgumentException("The prompt has no image.", nameof(prompt));
        string text = prompt.ToOpenFlamingoText();
        TextLimit.Check(text, Model.Config.LangEncoderConfig?.ContextLength ?? TextLimit.DefaultPositions, Tokenizer);
        var ids = Tokenizer.Encode(text, addSpecialTokens: true).ToArray();
        int media = ids.Count(id => id == Model.Config.MediaTokenId);
        if (media != prompt.Images.Count)
            throw new ArgumentException($"The prompt's text holds {media} <image> tokens for {prompt.Images.Count} images.", nameof(prompt));
        return ids;
    }

    private string Decode(IReadOnlyList<long> ids) => Tokenizer.Decode(ids);

    private protected override void DisposeModel() => Model.Dispose();

}
