using System.Text.Json.Nodes;

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
        File.WriteAllText(Path.Combine(folder.Path, "preprocessor_config.json"), WidenedVocabulary.Preprocessor("blip2-opt-2.7b"));
        int lmVocab = 32001, bertVocab = File.ReadAllLines(Path.Combine(tokenizers, "bert", "vocab.txt")).Length;

        WidenedVocabulary.Widen(Path.Combine(folder.Path, "model.safetensors"), new Dictionary<string, int>
        {
            ["language_model.model.embed_tokens.weight"] = lmVocab, ["language_model.lm_head.weight"] = lmVocab,
            ["qformer.embeddings.word_embeddings.weight"] = bertVocab,
        });
        string configPath = Path.Combine(folder.Path, "config.json");
        var config = JsonNode.Parse(File.ReadAllText(configPath))!;
        config["text_config"]!["vocab_size"] = lmVocab;
        config["text_config"]!["pad_token_id"] = 32000;
        config["qformer_config"]!["vocab_size"] = bertVocab;
        File.WriteAllText(configPath, config.ToJsonString());
        return folder;
    }
}

/// <summary>A hub-layout IDEFICS folder that runs end to end with the real LLaMA tokenizer: the oracle weights with the
/// language model's vocabulary widened to 32,001 ids (so &lt;fake_token_around_image&gt; is 32000 and &lt;image&gt;,
/// &lt;end_of_utterance&gt; fall in the two additional embeddings), tokenizer.model and preprocessor_config.json.</summary>
public static class IdeficsFolder
{
    public static TempDir Create()
    {
        var folder = TempDir.CopyOf(FixtureCase.Get("idefics").Path);
        File.Copy(Path.Combine(AppContext.BaseDirectory, "Tokenizers", "llama", "tokenizer.model"), Path.Combine(folder.Path, "tokenizer.model"));
        File.WriteAllText(Path.Combine(folder.Path, "preprocessor_config.json"), WidenedVocabulary.Preprocessor("idefics-9b"));
        const int vocab = 32001;
        WidenedVocabulary.Widen(Path.Combine(folder.Path, "model.safetensors"),
            new Dictionary<string, int> { ["model.embed_tokens.weight"] = vocab, ["lm_head.weight"] = vocab });
        string configPath = Path.Combine(folder.Path, "config.json");
        var config = JsonNode.Parse(File.ReadAllText(configPath))!;
        config["vocab_size"] = vocab;
        File.WriteAllText(configPath, config.ToJsonString());
        return folder;
    }
}

/// <summary>An OpenFlamingo-over-LLaMA folder (the layout of OpenFlamingo-9B-deprecated) that runs end to end with the
/// real LLaMA tokenizer: the oracle weights with the vocabulary widened to 32,003 ids, the fixture's trained rows of
/// &lt;|endofchunk|&gt;, &lt;image&gt; and &lt;PAD&gt; (50–52) moved to where the extended LLaMA tokenizer puts them
/// (32000–32002), and tokenizer.model.</summary>
public static class FlamingoLlamaFolder
{
    public const int Vocabulary = 32003;

    public static TempDir Create()
    {
        var folder = TempDir.CopyOf(FixtureCase.Get("openflamingo-llama").Path);
        File.Copy(Path.Combine(AppContext.BaseDirectory, "Tokenizers", "llama", "tokenizer.model"), Path.Combine(folder.Path, "tokenizer.model"));
        // The full-state-dict path reads model.safetensors; the other files would be read instead of it only without it.
        foreach (var other in new[] { "checkpoint.pt", "checkpoint_trainable.pt" }) File.Delete(Path.Combine(folder.Path, other));
        var moved = new Dictionary<int, int> { [50] = 32000, [51] = 32001, [52] = 32002 };
        WidenedVocabulary.Widen(Path.Combine(folder.Path, "model.safetensors"),
            new Dictionary<string, int> { ["lang_encoder.model.embed_tokens.weight"] = Vocabulary, ["lang_encoder.lm_head.weight"] = Vocabulary }, moved);
        string configPath = Path.Combine(folder.Path, "config.json");
        var config = JsonNode.Parse(File.ReadAllText(configPath))!;
        config["len_tokenizer"] = Vocabulary;
        config["lang_encoder_config"]!["vocab_size"] = Vocabulary;
        config["eoc_token_id"] = 32000;
        config["media_token_id"] = 32001;
        config["pad_token_id"] = 32002;
        File.WriteAllText(configPath, config.ToJsonString());
        return folder;
    }
}

/// <summary>A hub-layout InstructBLIP (Flan-T5) folder that runs end to end with the real tokenizers: the oracle weights of
/// instructblip-t5 with T5's and the Q-Former's vocabularies widened to the tokenizers', spiece.model,
/// qformer_tokenizer/vocab.txt and preprocessor_config.json.</summary>
public static class InstructBlipT5Folder
{
    public static TempDir Create()
    {
        var folder = TempDir.CopyOf(FixtureCase.Get("instructblip-t5").Path);
        string tokenizers = Path.Combine(AppContext.BaseDirectory, "Tokenizers");
        File.Copy(Path.Combine(tokenizers, "t5", "spiece.model"), Path.Combine(folder.Path, "spiece.model"));
        Directory.CreateDirectory(Path.Combine(folder.Path, "qformer_tokenizer"));
        File.Copy(Path.Combine(tokenizers, "bert", "vocab.txt"), Path.Combine(folder.Path, "qformer_tokenizer", "vocab.txt"));
        File.WriteAllText(Path.Combine(folder.Path, "preprocessor_config.json"), WidenedVocabulary.Preprocessor("blip2-opt-2.7b"));
        const int t5Vocab = 32128;
        int bertVocab = File.ReadAllLines(Path.Combine(tokenizers, "bert", "vocab.txt")).Length;
        WidenedVocabulary.Widen(Path.Combine(folder.Path, "model.safetensors"), new Dictionary<string, int>
        {
            ["language_model.shared.weight"] = t5Vocab, ["language_model.lm_head.weight"] = t5Vocab,
            ["qformer.embeddings.word_embeddings.weight"] = bertVocab,
        });
        string configPath = Path.Combine(folder.Path, "config.json");
        var config = JsonNode.Parse(File.ReadAllText(configPath))!;
        config["text_config"]!["vocab_size"] = t5Vocab;
        config["qformer_config"]!["vocab_size"] = bertVocab;
        File.WriteAllText(configPath, config.ToJsonString());
        return folder;
    }
}
