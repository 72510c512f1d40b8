using Multimodal.Processing;

namespace Multimodal.Blip2;

/// <summary>Model inputs for a batch: (B, 3, H, W) pixels, (B, T) ids and mask. Disposing disposes the tensors.</summary>
public sealed record Blip2Inputs(Tensor PixelValues, Tensor InputIds, Tensor AttentionMask) : IDisposable
{
    /// <inheritdoc/>
    public void Dispose()
    {
        PixelValues.Dispose();
        InputIds.Dispose();
        AttentionMask.Dispose();
    }
}

/// <summary>transformers v4.45.1 <c>Blip2Processor</c> (processing_blip_2.py): the image processor and the
/// tokenizer of a checkpoint folder, and the prompt layout the model expects. Prompts are tokenized with
/// BOS and left-padded (generation reads the last position); when the config has
/// <c>image_token_index</c>, <c>num_query_tokens</c> image tokens go in front of each row, so the padding
/// sits between them and the text, as upstream's processor produces.</summary>
public sealed class Blip2Processor
{
    private readonly int? _imageToken;
    private readonly int _queryTokens;
    private readonly bool _rightPadding;

    /// <summary>The image processor.</summary>
    public BlipImageProcessor ImageProcessor { get; }

    /// <summary>The tokenizer.</summary>
    public ITextTokenizer Tokenizer { get; }

    /// <summary>The language model's positions, which bound a prompt's length before it is tokenized (<see cref="TextLimit"/>).</summary>
    public int Positions { get; }

    /// <summary>Creates a processor for a model configuration.</summary>
    public Blip2Processor(BlipImageProcessor imageProcessor, ITextTokenizer tokenizer, Blip2Config config)
        : this(imageProcessor, tokenizer, config.ImageTokenIndex, config.NumQueryTokens, config.TextConfig.ContextLength)
    {
    }

    /// <summary>The same prompt layout for another BLIP-2-family model (InstructBLIP).</summary>
    internal Blip2Processor(BlipImageProcessor imageProcessor, ITextTokenizer tokenizer, int? imageTokenIndex, int numQueryTokens, int? contextLength)
    {
        Positions = contextLength ?? TextLimit.DefaultPositions;
        ImageProcessor = imageProcessor;
        Tokenizer = tokenizer;
        _imageToken = imageTokenIndex;
        _queryTokens = numQueryTokens;
        // T5's tokenizer pads on the right (its encoder is bidirectional); OPT prompts are left-padded so
        // generation continues from the last position.
        _rightPadding = tokenizer is T5SentencePieceTokenizer;
    }

    /// <summary>Reads <c>preprocessor_config.json</c> and the tokenizer files of a checkpoint folder.</summary>
    /// <exception cref="FileNotFoundException">a processor or tokenizer file is missing.</exception>
    /// <exception cref="NotSupportedException">the tokenizer class is not supported.</exception>
    public static Blip2Processor FromFolder(string folder, Blip2Config config)
    {
        string configPath = Path.Combine(folder, "tokenizer_config.json");
        string name = "GPT2Tokenizer";
        if (File.Exists(configPath))
        {
            using var doc = System.Text.Json.JsonDocument.Parse(File.ReadAllText(configPath));
            if (doc.RootElement.TryGetProperty("tokenizer_class", out var cls) && cls.GetString() is string n) name = n;
        }
        ITextTokenizer tokenizer = name switch
        {
            "GPT2Tokenizer" or "GPT2TokenizerFast" => Gpt2Tokenizer.FromFolder(folder),
            "T5Tokenizer" or "T5TokenizerFast" => T5SentencePieceTokenizer.FromModel(Path.Combine(folder, "spiece.model")),
            _ => throw new NotSupportedException($"{configPath}: tokenizer_class \"{name}\" is not supported; BLIP-2 uses GPT2Tokenizer (OPT) or T5Tokenizer (Flan-T5)."),
        };
        return new Blip2Processor(BlipImageProcessor.FromFolder(folder), tokenizer, config);
    }

    /// <summary>Positions a prompt takes in <c>input_ids</c> (its tokens, and the image tokens in the
    /// <c>image_token_index</c> layout).</summary>
    /// <exception cref="ArgumentException">the prompt is longer than the model's positions can hold.</exception>
    public int PromptPositions(string prompt) => Encode(prompt).Count + (_imageToken is null ? 0 : _queryTokens);

    private IReadOnlyList<long> Encode(string prompt)
    {
        TextLimit.Check(prompt, Positions, Tokenizer);
        return Tokenizer.Encode(prompt);
    }

    /// <summary>Builds the inputs for images and their prompts (one prompt per image; "" for plain captioning).</summary>
    /// <exception cref="ArgumentException">a prompt is longer than the model's positions can hold.</exception>
    public Blip2Inputs Process(IReadOnlyList<DecodedImage> images, IReadOnlyList<string> prompts)
    {
        if (images.Count != prompts.Count)
            throw new ArgumentException($"{images.Count} images but {prompts.Count} prompts; give one prompt per image.", nameof(prompts));
        long pad = Tokenizer.PadTokenId ?? 1;
        var rows = prompts.Select(Encode).ToList();
        int width = rows.Max(r => r.Count);
        int prefix = _imageToken is null ? 0 : _queryTokens;
        var ids = new long[checked(images.Count * (prefix + width))];
        var mask = new long[ids.Length];
        for (int b = 0; b < rows.Count; b++)
        {
            int o = b * (prefix + width);
            for (int i = 0; i < prefix; i++) { ids[o + i] = _imageToken!.Value; mask[o + i] = 1; }
            int padding = width - rows[b].Count;
            for (int i = 0; i < width; i++)
            {
                int j = _rightPadding ? i : i - padding;
                bool real = j >= 0 && j < rows[b].Count;
                ids[o + prefix + i] = real ? rows[b][j] : pad;
                mask[o + prefix + i] = real ? 1 : 0;
            }
        }
        var pixels = ImageProcessor.Preprocess(images);
        return new Blip2Inputs(pixels, tensor(ids, [images.Count, prefix + width]), tensor(mask, [images.Count, prefix + width]));
    }
}
