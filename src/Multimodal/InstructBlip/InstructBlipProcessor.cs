using System.Text.Json;
using Multimodal.Blip2;
using Multimodal.Processing;

namespace Multimodal.InstructBlip;

/// <summary>Model inputs for a batch. Disposing disposes the tensors.</summary>
/// <param name="PixelValues">(B, 3, H, W).</param>
/// <param name="QformerInputIds">(B, Tq) the instruction in the Q-Former's BERT vocabulary, right-padded.</param>
/// <param name="QformerAttentionMask">(B, Tq).</param>
/// <param name="InputIds">(B, T) the prompt in the language model's vocabulary.</param>
/// <param name="AttentionMask">(B, T).</param>
public sealed record InstructBlipInputs(Tensor PixelValues, Tensor QformerInputIds, Tensor QformerAttentionMask, Tensor InputIds, Tensor AttentionMask) : IDisposable
{
    /// <inheritdoc/>
    public void Dispose()
    {
        foreach (var t in new[] { PixelValues, QformerInputIds, QformerAttentionMask, InputIds, AttentionMask }) t.Dispose();
    }
}

/// <summary>transformers v4.45 <c>InstructBlipProcessor</c> (processing_instructblip.py): the image through the BLIP image
/// processor; the same text through the language model's tokenizer (LLaMA SentencePiece for Vicuna, left-padded; T5 for
/// Flan-T5, right-padded; in the <c>image_token_index</c> layout <c>num_query_tokens</c> image tokens in front) and through
/// the Q-Former's BERT tokenizer (<c>[CLS] … [SEP]</c>, right-padded with <c>[PAD]</c>) into <c>qformer_input_ids</c>.</summary>
public sealed class InstructBlipProcessor
{
    private readonly Blip2Processor _language;

    /// <summary>The Q-Former's tokenizer.</summary>
    public BertWordPieceTokenizer QformerTokenizer { get; }

    /// <summary>The language model's tokenizer.</summary>
    public ITextTokenizer Tokenizer => _language.Tokenizer;

    /// <summary>The image processor.</summary>
    public BlipImageProcessor ImageProcessor => _language.ImageProcessor;

    /// <summary>Combines the three parts for a model configuration.</summary>
    public InstructBlipProcessor(BlipImageProcessor imageProcessor, ITextTokenizer tokenizer, BertWordPieceTokenizer qformerTokenizer, InstructBlipConfig config)
    {
        _language = new Blip2Processor(imageProcessor, tokenizer, config.ImageTokenIndex, config.NumQueryTokens, config.TextConfig.ContextLength);
        QformerTokenizer = qformerTokenizer;
    }

    /// <summary>Reads a published InstructBLIP folder: <c>preprocessor_config.json</c>, the language tokenizer
    /// (<c>tokenizer.model</c> + <c>tokenizer_config.json</c> / <c>added_tokens.json</c> for Vicuna, <c>spiece.model</c> for
    /// Flan-T5) and <c>qformer_tokenizer/vocab.txt</c>.</summary>
    /// <exception cref="FileNotFoundException">a processor or tokenizer file is missing.</exception>
    /// <exception cref="NotSupportedException">the tokenizer class is not LLaMA's or T5's.</exception>
    public static InstructBlipProcessor FromFolder(string folder, InstructBlipConfig config)
    {
        string configPath = Path.Combine(folder, "tokenizer_config.json");
        using var tokenizerConfig = File.Exists(configPath) ? JsonDocument.Parse(File.ReadAllText(configPath)) : JsonDocument.Parse("{}");
        string? Token(string key) => tokenizerConfig.RootElement.TryGetProperty(key, out var v)
            ? v.ValueKind == JsonValueKind.String ? v.GetString() : v.ValueKind == JsonValueKind.Object && v.TryGetProperty("content", out var c) ? c.GetString() : null
            : null;
        string name = Token("tokenizer_class") ?? (File.Exists(Path.Combine(folder, "spiece.model")) ? "T5Tokenizer" : "LlamaTokenizer");
        ITextTokenizer tokenizer = name switch
        {
            "LlamaTokenizer" or "LlamaTokenizerFast" => LlamaSentencePieceTokenizer.FromModel(Path.Combine(folder, "tokenizer.model"),
                AddedTokens(folder), Token("pad_token"), Token("bos_token") ?? "<s>"),
            "T5Tokenizer" or "T5TokenizerFast" => T5SentencePieceTokenizer.FromModel(Path.Combine(folder, "spiece.model")),
            _ => throw new NotSupportedException($"{configPath}: tokenizer_class \"{name}\" is not supported; InstructBLIP uses LlamaTokenizer (Vicuna) or T5Tokenizer (Flan-T5)."),
        };
        var qformer = BertWordPieceTokenizer.FromVocab(Path.Combine(folder, "qformer_tokenizer", "vocab.txt"));
        return new InstructBlipProcessor(BlipImageProcessor.FromFolder(folder), tokenizer, qformer, config);
    }

    // added_tokens.json maps token → id; the tokenizer appends them in id order after the vocabulary (Vicuna's [PAD]).
    private static IReadOnlyList<string> AddedTokens(string folder)
    {
        string path = Path.Combine(folder, "added_tokens.json");
        if (!File.Exists(path)) return [];
        using var doc = JsonDocument.Parse(File.ReadAllText(path));
        return doc.RootElement.EnumerateObject().OrderBy(p => p.Value.GetInt32()).Select(p => p.Name).ToList();
    }

    /// <summary>Builds the inputs for images and their instructions (one per image).</summary>
    public InstructBlipInputs Process(IReadOnlyList<DecodedImage> images, IReadOnlyList<string> prompts)
    {
        var language = _language.Process(images, prompts);
        var rows = prompts.Select(p => QformerTokenizer.Encode(p)).ToList();
        int width = rows.Max(r => r.Count);
        long pad = QformerTokenizer.PadTokenId ?? 0;
        var ids = new long[checked(rows.Count * width)];
        var mask = new long[ids.Length];
        for (int b = 0; b < rows.Count; b++)
            for (int i = 0; i < width; i++)
            {
                bool real = i < rows[b].Count;
                ids[b * width + i] = real ? rows[b][i] : pad;
                mask[b * width + i] = real ? 1 : 0;
            }
        return new InstructBlipInputs(language.PixelValues, tensor(ids, [rows.Count, width]), tensor(mask, [rows.Count, width]),
            language.InputIds, language.AttentionMask);
    }
}
