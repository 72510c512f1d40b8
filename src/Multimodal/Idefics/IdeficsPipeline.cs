using Multimodal.Common;
using Multimodal.Generation;
using Multimodal.Loading;
using Multimodal.Processing;

namespace Multimodal.Idefics;

/// <summary>IDEFICS end to end: interleaved prompt → IDEFICS' image processor and prompt layout (with its
/// image attention mask) → <see cref="IdeficsForVisionText2Text.Generate(Tensor, Tensor, Tensor, Tensor, GenerationOptions?, Func{IReadOnlyList{long}, string}?, Action{long[], bool[]}?, CancellationToken)"/> → text.</summary>
public sealed class IdeficsPipeline(IdeficsForVisionText2Text model, LlamaSentencePieceTokenizer tokenizer, IdeficsImageProcessor imageProcessor) : InterleavedPipeline, IVisionLanguageModel
{

    /// <summary>The model.</summary>
    public IdeficsForVisionText2Text Model { get; } = model;

    /// <summary>The tokenizer (with <c>&lt;fake_token_around_image&gt;</c> and <c>&lt;image&gt;</c>).</summary>
    public LlamaSentencePieceTokenizer Tokenizer { get; } = tokenizer;

    /// <summary>The image processor.</summary>
    public IdeficsImageProcessor ImageProcessor { get; } = imageProcessor;

    /// <summary>Loads an IDEFICS folder: config, weights, <c>tokenizer.model</c>, <c>preprocessor_config.json</c>; or a
    /// hub id (HuggingFaceM4/idefics-9b-instruct) in the local Hugging Face cache at <paramref name="revision"/>.</summary>
    public static IdeficsPipeline FromPretrained(string folder, Device? device = null, ScalarType? dtype = null,
        IProgress<LoadProgress>? progress = null, string? revision = null)
    {
        folder = HubCache.Resolve(folder, revision);
        return Ownership.DisposeOnFailure(IdeficsForVisionText2Text.FromPretrained(folder, device, dtype, progress), model =>
        {
            var tokenizer = LlamaSentencePieceTokenizer.FromModel(Path.Combine(folder, "tokenizer.model"),
                ["<fake_token_around_image>", "<image>", "<end_of_utterance>"]);
            return new IdeficsPipeline(model, tokenizer, IdeficsImageProcessor.FromFolder(folder));
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

    private protected override int BeamsOf(GenerationOptions options) => options.WithDefaults(Model.GenerationConfig).NumBeams;

    private protected override TextResult Generate(InterleavedPrompt prompt, GenerationOptions? options, Action<long[], bool[]>? onTokens, CancellationToken cancellationToken)
    {
        var images = prompt.Images;
        if (images.Count == 0) throw new ArgumentException("The prompt has no image.", nameof(prompt));
        TextLimit.Check(string.Concat(prompt.Parts.OfType<TextPart>().Select(p => p.Text)), Positions, Tokenizer);
        using var scope = NewDisposeScope();
        long fake = Tokenizer.Encode("<fake_token_around_image>", false)[0], image = Tokenizer.Encode("<image>", false)[0];
        var ids = IdeficsPromptLayout.Ids(prompt, t => Tokenizer.Encode(t, addSpecialTokens: false), Tokenizer.BosTokenId, fake, image);
        var rows = IdeficsPromptLayout.ImageAttentionMask(ids, image, Model.Config.EosTokenId, images.Count);
        var mask = tensor(Enumerable.Range(0, ids.Length).SelectMany(t => Enumerable.Range(0, images.Count).Select(k => rows[t, k])).ToArray(),
            [1, ids.Length, images.Count]);
        var pixels = ImageProcessor.Preprocess(images).unsqueeze(0);                      // (1, N, 3, H, W)
        using var output = Model.Generate(tensor(ids).unsqueeze(0), ones(1, ids.Length, ScalarType.Int64), pixels, mask,
            options, t => Tokenizer.Decode(t), onTokens, cancellationToken);
        var row = output.Sequences[0];
        return new TextResult(Tokenizer.Decode(row.Skip(ids.Length)).Trim(), row, output.Scores[0], output.FinishReasons[0], output.InputTokens[0], output.NewTokens[0]);
    }

    private protected override void DisposeModel() => Model.Dispose();
}
