using System.Text.Json.Nodes;
using Multimodal.Loading;
using static TorchSharp.torch;

namespace Multimodal.Tests.TestSupport;

/// <summary>A hub-layout InstructBLIP (Vicuna) folder that runs end to end with the real tokenizers: the oracle weights
/// with the language model's and the Q-Former's vocabularies widened to the tokenizers' (the extra rows are small random
/// values, so answers are arbitrary text), plus tokenizer.model, tokenizer_config.json, added_tokens.json,
/// qformer_tokenizer/vocab.txt and preprocessor_config.json.</summary>
public static class InstructBlipFolder
{
    public static TempDir Create()
    {
        var folder = TempDir.CopyOf(FixtureCase.Get("instructblip-vicuna").Path);
        string tokenizers = Path.Combine(AppContext.BaseDirectory, "Tokenizers");
        File.Copy(Path.Combine(tokenizers, "llama", "tokenizer.model"), Path.Combine(folder.Path, "tokenizer.model"));
        File.WriteAllText(Path.Combine(folder.Path, "tokenizer_config.json"), """{"tokenizer_class": "LlamaTokenizer", "bos_token": "</s>", "pad_token": "[PAD]", "padding_side": "left"}""");
        File.WriteAllText(Path.Combine(folder.Path, "added_tokens.json"), """{"[PAD]": 32000}""");
        Directory.CreateDirectory(Path.Combine(folder.Path, "qformer_tokenizer"));
        File.Copy(Path.Combine(tokenizers, "bert", "vocab.txt"), Path.Combine(folder.Path, "qformer_tokenizer", "vocab.txt"));
        File.WriteAllText(Path.Combine(folder.Path, "preprocessor_config.json"),
            File.ReadAllText(Path.Combine(AppContext.BaseDirectory, "Preprocess", "configs", "blip2-opt-2.7b", "preprocessor_config.json"))
                .Replace("\"height\": 224", "\"height\": 30").Replace("\"width\": 224", "\"width\": 30"));
        int lmVocab = 32001, bertVocab = File.ReadAllLines(Path.Combine(tokenizers, "bert", "vocab.txt")).Length;

        string weights = Path.Combine(folder.Path, "model.safetensors");
        var widened = new Dictionary<string, Tensor>();
        using (var file = SafetensorsFile.Open(weights))
        {
            var generator = new Generator(seed: 7);
            foreach (var name in file.Entries.Keys)
            {
                var t = file.Read(name);
                int rows = name is "language_model.model.embed_tokens.weight" or "language_model.lm_head.weight" ? lmVocab
                    : name == "qformer.embeddings.word_embeddings.weight" ? bertVocab : (int)t.shape[0];
                widened[name] = rows == t.shape[0] ? t : cat([t, randn(rows - t.shape[0], t.shape[1], generator: generator).mul_(0.02)]);
            }
        }
        SafetensorsWriter.Write(weights, widened);
        foreach (var t in widened.Values) t.Dispose();
        string configPath = Path.Combine(folder.Path, "config.json");
        var config = JsonNode.Parse(File.ReadAllText(configPath))!;
        config["text_config"]!["vocab_size"] = lmVocab;
        config["text_config"]!["pad_token_id"] = 32000;
        config["qformer_config"]!["vocab_size"] = bertVocab;
        File.WriteAllText(configPath, config.ToJsonString());
        return folder;
    }
}
