using Multimodal.Blip2;
using Multimodal.Common;
using Multimodal.Loading;
using Multimodal.Tests.Parity;
using Multimodal.Tests.TestSupport;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace Multimodal.Tests.Loading;

/// <summary>Mapping published tensors onto the model: strict, all problems in one message, and the legacy
/// forms real checkpoints use.</summary>
public sealed class CheckpointMappingTests(ITestOutputHelper output)
{
    private static string Fixture => Path.Combine(FixtureCase.BuiltInRoot, "blip2-opt");
    private const string Weights = "model.safetensors";

    /// <summary>A copy of the blip2-opt fixture whose weights were rewritten by <paramref name="edit"/>.</summary>
    private static TempDir CopyWithWeights(Action<Dictionary<string, Tensor>> edit)
    {
        var temp = TempDir.CopyOf(Fixture);
        string path = Path.Combine(temp.Path, Weights);
        Dictionary<string, Tensor> tensors;
        using (var file = SafetensorsFile.Open(path))
            tensors = file.Entries.Keys.ToDictionary(k => k, file.Read);
        edit(tensors);
        SafetensorsWriter.Write(path, tensors);
        foreach (var t in tensors.Values) t.Dispose();
        return temp;
    }

    private CheckpointMismatchException Mismatch(string folder)
    {
        var e = Assert.Throws<CheckpointMismatchException>(() => Blip2ForConditionalGeneration.FromPretrained(folder).Dispose());
        output.WriteLine(e.Message);
        Assert.Contains(folder, e.Message);
        return e;
    }

    [Fact]
    public void A_missing_tensor_is_named()
    {
        using var temp = CopyWithWeights(t => t.Remove("qformer.encoder.layer.1.output_query.dense.bias"));
        var e = Mismatch(temp.Path);
        Assert.Equal(["qformer.encoder.layer.1.output_query.dense.bias [32]"], e.Missing);
        Assert.Empty(e.Unexpected);
    }

    [Fact]
    public void An_unexpected_tensor_is_named_with_its_file()
    {
        using var temp = CopyWithWeights(t => t["qformer.encoder.layer.0.surprise"] = zeros(3));
        var e = Mismatch(temp.Path);
        Assert.Equal([$"qformer.encoder.layer.0.surprise [3] (in {Weights})"], e.Unexpected);
    }

    [Fact]
    public void A_wrong_shape_is_refused_before_anything_is_copied()
    {
        // [32] would broadcast silently into a [1, 8, 32] parameter through copy_; the loader must refuse it.
        using var temp = CopyWithWeights(t => t["query_tokens"] = zeros(32));
        var e = Mismatch(temp.Path);
        Assert.Equal([$"query_tokens: model expects [1, 8, 32], {Weights} has query_tokens [32]"], e.Mismatched);
    }

    [Fact]
    public void An_integer_tensor_where_a_float_weight_belongs_is_refused()
    {
        using var temp = CopyWithWeights(t => t["language_projection.bias"] = zeros(32, ScalarType.Int64));
        var e = Mismatch(temp.Path);
        Assert.Contains("language_projection.bias: model holds Float32", e.Mismatched.Single());
    }

    [Fact]
    public void All_problems_come_in_one_exception()
    {
        using var temp = CopyWithWeights(t =>
        {
            t.Remove("vision_model.post_layernorm.weight");
            t.Remove("language_projection.weight");
            t["extra.one"] = zeros(1);
            t["vision_model.embeddings.class_embedding"] = zeros(1, 2, 32);
        });
        var e = Mismatch(temp.Path);
        Assert.Equal(2, e.Missing.Count);
        Assert.Single(e.Unexpected);
        Assert.Single(e.Mismatched);
        Assert.Contains("missing (2)", e.Message);
        Assert.Contains("unexpected (1)", e.Message);
        Assert.Contains("wrong shape or dtype (1)", e.Message);
    }

    [Fact]
    public void Legacy_q_bias_and_v_bias_build_qkv_bias_with_a_zero_key_bias()
    {
        const string prefix = "vision_model.encoder.layers.0.self_attn.";
        Tensor? q = null, v = null;
        using var temp = CopyWithWeights(t =>
        {
            var qkv = t[prefix + "qkv.bias"];
            q = qkv[..32].clone();
            v = qkv[64..].clone();
            t.Remove(prefix + "qkv.bias");
            t[prefix + "q_bias"] = q.clone();
            t[prefix + "v_bias"] = v.clone();
        });
        using var model = Blip2ForConditionalGeneration.FromPretrained(temp.Path);
        var loaded = model.state_dict()[prefix + "qkv.bias"];
        Assert.True(loaded.eq(cat([q!, zeros(32), v!])).all().item<bool>());
    }

    [Fact]
    public void An_extra_lm_head_is_tied_not_copied()
    {
        using var temp = CopyWithWeights(t => t["language_model.lm_head.weight"] = t["language_model.model.decoder.embed_tokens.weight"] + 1);
        using var model = Blip2ForConditionalGeneration.FromPretrained(temp.Path);
        var state = model.state_dict();
        var head = state["language_model.lm_head.weight"];
        var embed = state["language_model.model.decoder.embed_tokens.weight"];
        Assert.True(head.eq(embed).all().item<bool>(), "lm_head must hold the embedding, not the file's extra copy");
        using (no_grad()) head.add_(1);
        Assert.True(head.eq(embed).all().item<bool>(), "lm_head and embed_tokens must be one parameter");
    }

    [Fact]
    public void Loading_into_bfloat16_converts_every_parameter()
    {
        using var model = Blip2ForConditionalGeneration.FromPretrained(Fixture, dtype: ScalarType.BFloat16);
        Assert.All(model.parameters(), p => Assert.Equal(ScalarType.BFloat16, p.dtype));
        using var reference = FixtureCase.Get("blip2-opt").OpenReference();
        using var result = Blip2ParityTests.RunForward(model, reference);
        using var expected = reference.Read("logits");
        // bf16 keeps 8 bits of mantissa: this checks the path runs and stays near, not parity.
        double error = (result.Logits.to(ScalarType.Float32) - expected).abs().max().item<float>();
        output.WriteLine($"bf16 logits max abs error vs fp32 reference: {error:E2}");
        Assert.True(error < 0.5, $"bf16 logits drift {error}");
    }

    [Fact]
    public void A_malformed_config_names_the_file()
    {
        using var temp = TempDir.CopyOf(Fixture);
        string config = Path.Combine(temp.Path, "config.json");
        File.WriteAllText(config, File.ReadAllText(config)[..200]);
        var e = Assert.Throws<ConfigException>(() => Blip2ForConditionalGeneration.FromPretrained(temp.Path));
        output.WriteLine(e.Message);
        Assert.Contains(config, e.Message);
    }

    [Fact]
    public void A_config_value_of_the_wrong_type_names_the_key()
    {
        using var temp = TempDir.CopyOf(Fixture);
        string config = Path.Combine(temp.Path, "config.json");
        File.WriteAllText(config, File.ReadAllText(config).Replace("\"num_query_tokens\": 8", "\"num_query_tokens\": \"eight\""));
        var e = Assert.Throws<ConfigException>(() => Blip2ForConditionalGeneration.FromPretrained(temp.Path));
        output.WriteLine(e.Message);
        Assert.Contains("num_query_tokens", e.Message);
    }

    [Fact]
    public void A_folder_without_weights_says_what_it_expected()
    {
        using var temp = TempDir.CopyOf(Fixture);
        File.Delete(Path.Combine(temp.Path, Weights));
        var e = Assert.Throws<FileNotFoundException>(() => Blip2ForConditionalGeneration.FromPretrained(temp.Path));
        Assert.Contains("model.safetensors.index.json", e.Message);
        Assert.Throws<DirectoryNotFoundException>(() => Blip2ForConditionalGeneration.FromPretrained(Path.Combine(temp.Path, "nope")));
    }

    [Fact]
    public void An_index_naming_a_missing_shard_is_refused()
    {
        using var temp = new TempDir();
        Blip2ParityTests.WriteShardedCopy(Fixture, temp.Path, shardCount: 2);
        File.Delete(Path.Combine(temp.Path, "model-00002-of-00002.safetensors"));
        var e = Assert.Throws<CheckpointFormatException>(() => Blip2ForConditionalGeneration.FromPretrained(temp.Path));
        output.WriteLine(e.Message);
        Assert.Contains("shard model-00002-of-00002.safetensors is listed but does not exist", e.Message);
    }
}
