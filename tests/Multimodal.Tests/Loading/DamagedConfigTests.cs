using System.Text.Json.Nodes;
using Multimodal.Blip2;
using Multimodal.Common;
using Multimodal.Flamingo;
using Multimodal.Idefics;
using Multimodal.Loading;
using Multimodal.Tests.TestSupport;
using Xunit.Abstractions;

namespace Multimodal.Tests.Loading;

/// <summary>A config.json with absurd or impossible values fails before anything is built: one
/// <see cref="ConfigException"/> naming the file and the key, or — when every value is plausible but the
/// weights disagree — a mismatch found on the meta device, before any memory is allocated.</summary>
public sealed class DamagedConfigTests(ITestOutputHelper output)
{
    private Exception Load(string fixture, Action<JsonObject> edit, Func<string, IDisposable> load)
    {
        using var folder = TempDir.CopyOf(FixtureCase.Get(fixture).Path);
        string path = Path.Combine(folder.Path, "config.json");
        var json = JsonNode.Parse(File.ReadAllText(path))!.AsObject();
        edit(json);
        File.WriteAllText(path, json.ToJsonString());
        var e = Assert.ThrowsAny<Exception>(() => load(folder.Path).Dispose());
        output.WriteLine($"{e.GetType().Name}: {e.Message}");
        return e;
    }

    private ConfigException Blip2Config(Action<JsonObject> edit, params string[] expected)
    {
        var e = Assert.IsType<ConfigException>(Load("blip2-opt", edit, f => Blip2ForConditionalGeneration.FromPretrained(f)));
        Assert.Contains("config.json", e.Message);
        foreach (var s in expected) Assert.Contains(s, e.Message);
        return e;
    }

    [Fact]
    public void Absurd_sizes_are_named_by_key()
    {
        Blip2Config(j => j["text_config"]!["num_hidden_layers"] = 1_000_000, "text_config.num_hidden_layers = 1000000");
        Blip2Config(j => j["vision_config"]!["num_hidden_layers"] = 0, "vision_config.num_hidden_layers = 0");
        Blip2Config(j => j["qformer_config"]!["hidden_size"] = -32, "qformer_config.hidden_size = -32");
        Blip2Config(j => j["text_config"]!["num_attention_heads"] = 5, "text_config.hidden_size = 32 is not a multiple of text_config.num_attention_heads = 5");
        Blip2Config(j => j["vision_config"]!["image_size"] = 32, "vision_config.image_size = 32 is not a multiple of vision_config.patch_size = 5");
        Blip2Config(j => j["num_query_tokens"] = 0, "num_query_tokens = 0");
        Blip2Config(j => j["text_config"]!["vocab_size"] = 2_000_000_000, "text_config.vocab_size = 2000000000");
        // Several at once, in one message.
        Blip2Config(j => { j["vision_config"]!["hidden_size"] = 0; j["text_config"]!["ffn_dim"] = 0; }, "vision_config.hidden_size = 0", "text_config.ffn_dim = 0");
    }

    [Fact]
    public void Wrongly_typed_or_null_keys_are_named()
    {
        Blip2Config(j => j["text_config"]!["hidden_size"] = "wide", "hidden_size");
        Blip2Config(j => j["num_query_tokens"] = null, "num_query_tokens");
        var modelType = Blip2Config(j => j["text_config"]!["model_type"] = null, "model_type");
        Assert.DoesNotContain("pad_token_id", modelType.Message);
    }

    [Fact]
    public void Plausible_sizes_that_do_not_fit_the_weights_fail_before_allocation()
    {
        // 2,000,000 × 8,192 float32 rows would be 65 GB: found on the meta device, never allocated.
        var e = Assert.IsType<CheckpointMismatchException>(Load("blip2-opt", j =>
        {
            j["text_config"]!["vocab_size"] = 2_000_000;
            j["text_config"]!["hidden_size"] = 8192;
            j["text_config"]!["word_embed_proj_dim"] = 8192;
        }, f => Blip2ForConditionalGeneration.FromPretrained(f)));
        Assert.Contains("language_model.model.decoder.embed_tokens.weight", e.Message);
        Assert.Contains("[2000000, 8192]", e.Message);
    }

    [Fact]
    public void Other_families_check_their_keys_too()
    {
        var idefics = Assert.IsType<ConfigException>(Load("idefics", j => j["vision_config"]!["patch_size"] = 7, f => IdeficsForVisionText2Text.FromPretrained(f)));
        Assert.Contains("vision_config.image_size", idefics.Message);
        var flamingo = Assert.IsType<ConfigException>(Load("openflamingo", j => j["perceiver"]!["depth"] = 100_000, f => FlamingoModel.FromPretrained(f)));
        Assert.Contains("perceiver.depth = 100000", flamingo.Message);
        var lm = Assert.IsType<ConfigException>(Load("openflamingo", j => j["lang_encoder_config"]!["n_layers"] = 5_000, f => FlamingoModel.FromPretrained(f)));
        Assert.Contains("n_layers = 5000", lm.Message);
    }
}
