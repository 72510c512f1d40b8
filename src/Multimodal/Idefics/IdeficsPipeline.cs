using Multimodal.Common;
using Multimodal.Generation;
using Multimodal.Loading;
using Multimodal.Processing;

namespace Multimodal.Idefics;

/// <summary>IDEFICS end to end: interleaved prompt → IDEFICS' image processor and prompt layout (with its
/// image attention mask) → <see cref="IdeficsForVisionText2Text.Generate(Tensor, Tensor, Tensor, Tensor, GenerationOptions?, Func{IReadOnlyList{long}, string}?, Action{long[], bool[]}?, CancellationToken)"/> → text.</summary>
public sealed class IdeficsPipeline(IdeficsForVisionText2Text model, LlamaSentencePieceTokenizer tokenizer, IdeficsImageProcessor imageProcessor) : InterleavedPipeline, IVisionLanguageModel
{

    /// <summary>The model the façade drives: its forward pass, generation from explicit tensors, its generation defaults.</summary>
    public IdeficsForVisionText2Text Model { get; } = model;

    /// <summary>The tokenizer (with <c>&lt;fake_token_around_image&gt;</c> and <c>&lt;image&gt;</c>).</summary>
    public LlamaSentencePieceTokenizer Tokenizer { get; } = tokenizer;

    /// <summary>The image processor.</summary>
    public IdeficsImageProcessor ImageProcessor { get; } = imageProcessor;

    /// <summary>Loads an IDEFICS folder: config, weights, <c>tokenizer.model</c>, <c>preprocessor_config.json</c>; or a
    /// hub id (HuggingFaceM4/idefics-9b-instruct) in the local Hugging Face cache at <paramref name="revision"/>.</summary>
    /// <param name="folder">the folder, or a hub id in the local Hugging Face cache.</param>
    /// <param name="device">CPU (default) or CUDA.</param>
    /// <param name="dtype">Float32 (default), Float16 or BFloat16.</param>
    /// <param name="progress">receives a report after each weight tensor.</param>
    /// <param name="revision">with a hub id: the branch, tag or commit (default main).</param>
    /// <param name="quantization">weight-only quantization of the language model (see <see cref="WeightQuantization"/>).</param>
    /// <param name="batching">dynamic batching of concurrent calls (see <see cref="InterleavedPipeline.Batching"/>); null: none.</param>
    public static IdeficsPipeline FromPretrained(string folder, Device? device = null, ScalarType? dtype = null,
        IProgress<LoadProgress>? progress = null, string? revision = null, BatchingOptions? batching = null,
        WeightQuantization quantization = WeightQuantization.None)
    {
        batching?.Validate();
        folder = HubCache.Resolve(folder, revision);
        return Ownership.DisposeOnFailure(IdeficsForVisionText2Text.FromPretrained(folder, device, dtype, progress, quantization: quantization), model =>
        {
            var tokenizer = LlamaSentencePieceTokenizer.FromModel(Path.Combine(folder, "tokenizer.model"),
                ["<fake_token_around_image>", "<image>", "<end_of_utterance>"]);
            return new IdeficsPipeline(model, tokenizer, IdeficsImageProcessor.FromFolder(folder)) { Batching = batching };
        });
    }

    /// <summary>Positions the language model was trained for: IDEFICS is LLaMA-based with 2048, which its config does not
    /// repeat. They bound a prompt's text before it is tokenized (<see cref="TextLimit"/>).</summary>
    public const int Positions = 2048;

    /// <summary>This pipeline as a <see cref="Microsoft.Extensions.AI.IChatClient"/> (the pipeline keeps owning the model).</summary>
    public IdeficsChatClient AsChatClient(string? modelId = null) => new(this, modelId);

    private protected override ITextTokenizer StreamTokenizer => Tokenizer;

    ITextTokenizer IVisionLanguageModel.Tokenizer => Tokenizer;

    /// <inheritdoc/>
    public int? ContextLength => Positions;

    Microsoft.Extensions.AI.IChatClient IVisionLanguageModel.AsChatClient(string? modelId) => AsChatClient(modelId);

    // The IDEFICS-instruct dialogue its chat client writes: "User:<image>{question}<end_of_utterance>\nAssistant:".
    private protected override InterleavedPrompt SingleImagePrompt(DecodedImage image, string? question) =>
        IdeficsChatClient.Prompt([new Chat.ChatTurn(Microsoft.Extensions.AI.ChatRole.User,
            [new ImagePart(image), new TextPart(question ?? "Describe the image.")])]);

    private protected override GenerationCall Call(GenerationOptions? options, CancellationToken cancellationToken) =>
        GenerationCall.Resolve(options, Model.GenerationConfig, cancellationToken) with { Decode = t => Tokenizer.Decode(t) };

    private protected override IReadOnlyList<TextResult> Generate(IReadOnlyList<InterleavedPrompt> prompts, GenerationCall call,
        Action<int, TextResult>? onRowResult)
    {
        int images = prompts.Count > 0 ? prompts[0].Images.Count : throw new ArgumentException("No prompt was given.", nameof(prompts));
        if (prompts.Any(p => p.Images.Count != images))
            throw new ArgumentException("Every prompt of a batch needs the same number of images.", nameof(prompts));
        long fake = Tokenizer.Encode("<fake_token_around_image>", false)[0], image = Tokenizer.Encode("<image>", false)[0];
        var rows = prompts.Select(prompt =>
        {
            if (prompt.Images.Count == 0) throw new ArgumentException("The prompt has no image.", nameof(prompts));
            TextLimit.Check(string.Concat(prompt.Parts.OfType<TextPart>().Select(p => p.Text)), Positions, Tokenizer);
            return IdeficsPromptLayout.Ids(prompt, t => Tokenizer.Encode(t, addSpecialTokens: false), Tokenizer.BosTokenId, fake, image);
        }).ToList();
        using var scope = NewDisposeScope();
        var (ids, mask, padding) = LeftPad(rows, Model.Config.PadTokenId);
        int width = (int)ids.size(1);
        // Each row's image attention (position × image), its padding attending nothing.
        var attention = new long[checked((long)prompts.Count * width * images)];
        for (int r = 0; r < rows.Count; r++)
        {
            var one = IdeficsPromptLayout.ImageAttentionMask(rows[r], image, Model.Config.EosTokenId, images);
            for (int t = 0; t < rows[r].Length; t++)
                for (int k = 0; k < images; k++) attention[((long)r * width + padding[r] + t) * images + k] = one[t, k];
        }
        call = call.AnsweringRows(onRowResult, (row, alone) => RowResult(alone, 0, width, padding[row], Tokenizer));
        var pixels = ImageProcessor.Preprocess(prompts.SelectMany(p => p.Images).ToList());
        var pixelValues = pixels.view(prompts.Count, images, pixels.size(1), pixels.size(2), pixels.size(3));   // (B, N, 3, H, W)
        using var output = Model.Generate(ids, mask, pixelValues, tensor(attention, [prompts.Count, width, images]), call);
        return Enumerable.Range(0, prompts.Count).Select(r => RowResult(output, r, width, padding[r], Tokenizer)).ToList();
    }

    private protected override void DisposeModel() => Model.Dispose();

}
