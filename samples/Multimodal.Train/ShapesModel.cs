using Multimodal.Blip2;
using Multimodal.Language.Opt;
using Multimodal.Loading;
using Multimodal.Processing;
using Multimodal.QFormer;
using Multimodal.Vision;
using static TorchSharp.torch;

namespace Multimodal.Train;

/// <summary>The small BLIP-2 the project trains: its config, initialisation and how it is saved.</summary>
public static class ShapesModel
{
    public static Blip2Config Config() => new Blip2Config
    {
        VisionConfig = new Blip2VisionConfig { HiddenSize = 96, IntermediateSize = 384, NumHiddenLayers = 4, NumAttentionHeads = 4, ImageSize = Scenes.Size, PatchSize = 8 },
        QformerConfig = new QFormerConfig { HiddenSize = 96, IntermediateSize = 384, NumHiddenLayers = 2, NumAttentionHeads = 4, CrossAttentionFrequency = 1, VocabSize = 100, MaxPositionEmbeddings = 64 },
        TextConfig = new OptConfig { VocabSize = TokenizerFiles.VocabSize, HiddenSize = 96, FfnDim = 384, NumHiddenLayers = 2, NumAttentionHeads = 4, MaxPositionEmbeddings = 64, Dropout = 0 },
        NumQueryTokens = 8,
    }.Normalize();

    /// <summary>Generation defaults: the longest caption (three shapes) is 45 tokens with its end token, and
    /// 8 queries + BOS + 50 new tokens stay inside the 64 learned positions.</summary>
    public const string GenerationConfigJson = """
        {
          "bos_token_id": 2,
          "eos_token_id": 2,
          "max_new_tokens": 50,
          "pad_token_id": 1
        }
        """;

    public const string PreprocessorJson = """
        {
          "do_convert_rgb": true, "do_normalize": true, "do_rescale": true, "do_resize": true,
          "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
          "image_processor_type": "BlipImageProcessor", "processor_class": "Blip2Processor",
          "resample": 3, "rescale_factor": 0.00392156862745098, "size": { "height": 64, "width": 64 }
        }
        """;

    /// <summary>Makes every parameter trainable; on a fresh model also puts small random values where the
    /// inference constructors leave zeros or N(0, 1).</summary>
    public static void Initialize(Blip2ForConditionalGeneration model, bool fresh = true)
    {
        using var noGrad = no_grad();
        // The library builds its linear layers uninitialised (the loader overwrites them); from scratch they get
        // nn.Linear's own reset_parameters: Kaiming-uniform weights (a = √5), biases uniform in ±1/√fan_in.
        if (fresh)
            foreach (var linear in model.modules().OfType<TorchSharp.Modules.Linear>())
            {
                nn.init.kaiming_uniform_(linear.weight!, a: Math.Sqrt(5));
                if (linear.bias is { } bias) nn.init.uniform_(bias, -1 / Math.Sqrt(linear.in_features), 1 / Math.Sqrt(linear.in_features));
            }
        foreach (var (name, p) in model.named_parameters())
        {
            // Small embeddings: the head is tied to embed_tokens, and N(0, 1) rows give huge initial logits.
            if (fresh && (name.EndsWith("query_tokens") || name.EndsWith("class_embedding") || name.EndsWith("position_embedding")
                || name.EndsWith("embed_positions.weight") || name.EndsWith("embed_tokens.weight")))
                p.normal_(0, 0.02);
            p.requires_grad = true;
        }
    }

    /// <summary>config.json is written by the trainer; the weights go to model.safetensors in float16.</summary>
    public static void Save(Blip2ForConditionalGeneration model, string folder)
    {
        using var scope = NewDisposeScope();
        var tensors = model.state_dict().Where(kv => kv.Key != "language_model.lm_head.weight")
            .Select(kv => new KeyValuePair<string, Tensor>(kv.Key, kv.Value.detach().to(ScalarType.Float16)));
        SafetensorsWriter.Write(Path.Combine(folder, "model.safetensors"), tensors, new Dictionary<string, string> { ["format"] = "pt" });
    }
}

/// <summary>Byte-level BPE tokenizer files (GPT-2 format, like OPT's) whose merges spell the caption words;
/// any other text still encodes byte by byte. BPE applies merges by rank across words, so some words
/// ("triangle": 5 tokens) do not end as one token; the shipped model was trained with these files as they are.</summary>
public static class TokenizerFiles
{
    public static int VocabSize => Vocabulary().Count;

    private static List<string> Vocabulary()
    {
        var vocab = new List<string> { "<s>", "<pad>", "</s>", "<unk>" };
        vocab.AddRange(Gpt2Tokenizer.ByteLevelCharacters.Select(c => c.ToString()));
        foreach (var (_, merged) in Merges())
            if (!vocab.Contains(merged)) vocab.Add(merged);
        return vocab;
    }

    // Each word, with and without its leading space ("Ġ"), built left to right one character at a time.
    private static IEnumerable<(string Pair, string Merged)> Merges()
    {
        foreach (var word in Scenes.Words)
            foreach (var form in new[] { "Ġ" + word, word })
                for (int i = 2; i <= form.Length; i++)
                    yield return ($"{form[..(i - 1)]} {form[i - 1]}", form[..i]);
    }

    public static void Write(string folder)
    {
        var vocab = Vocabulary().Select((token, id) => (token, id)).ToDictionary(x => x.token, x => x.id);
        File.WriteAllText(Path.Combine(folder, "vocab.json"), System.Text.Json.JsonSerializer.Serialize(vocab));
        File.WriteAllLines(Path.Combine(folder, "merges.txt"), new[] { "#version: 0.2" }.Concat(Merges().Select(m => m.Pair).Distinct()));
        File.WriteAllText(Path.Combine(folder, "special_tokens_map.json"),
            """{"bos_token": "</s>", "eos_token": "</s>", "unk_token": "</s>", "pad_token": "<pad>"}""");
        File.WriteAllText(Path.Combine(folder, "tokenizer_config.json"),
            """{"add_bos_token": true, "bos_token": "</s>", "eos_token": "</s>", "unk_token": "</s>", "pad_token": "<pad>", "tokenizer_class": "GPT2Tokenizer", "processor_class": "Blip2Processor"}""");
    }
}
