using Multimodal.Generation;
using Multimodal.Language;
using Multimodal.Language.Llama;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace Multimodal.Tests.Modules;

/// <summary>LLaMA settings the fixtures do not vary (LLaMA-7B has none of them), checked by equivalence: grouped-query
/// attention equals multi-head attention whose key/value heads are the groups' copies; a wider head_dim and biases load and
/// run with the shapes upstream gives them.</summary>
public sealed class LlamaVariantsTests(ITestOutputHelper output)
{
    private static LlamaConfig Small(int kvHeads) => new()
    {
        VocabSize = 40, HiddenSize = 32, IntermediateSize = 48, NumHiddenLayers = 2, NumAttentionHeads = 4, NumKeyValueHeads = kvHeads,
        RopeTheta = 500000, TieWordEmbeddings = false,
    };

    [Fact]
    public void Grouped_query_attention_equals_heads_sharing_copied_keys_and_values()
    {
        using var gqa = new LlamaForCausalLM(Small(kvHeads: 2));
        using var mha = new LlamaForCausalLM(Small(kvHeads: 4));
        var generator = new TorchSharp.torch.Generator(seed: 3);
        var gqaState = gqa.state_dict();
        var mhaState = mha.state_dict();
        Assert.Equal(new long[] { 16, 32 }, gqaState["model.layers.0.self_attn.k_proj.weight"].shape);   // 2 heads of 8
        using (no_grad())
            foreach (var (key, p) in gqaState)
            {
                p.copy_(randn(p.shape, generator: generator).mul_(key.Contains("norm") ? 0.1 : 0.3).add_(key.Contains("norm") ? 1 : 0));
                // k/v rows of head h in the multi-head model are those of group h / 2.
                var copy = key.Contains("k_proj") || key.Contains("v_proj") ? p.view(2, 1, 8, 32).expand(2, 2, 8, 32).reshape(32, 32) : p;
                mhaState[key].copy_(copy);
            }
        var ids = tensor(new long[,] { { 3, 7, 1, 9, 12, 5 }, { 0, 0, 4, 4, 8, 2 } });
        var mask = tensor(new long[,] { { 1, 1, 1, 1, 1, 1 }, { 0, 0, 1, 1, 1, 1 } });
        using var inference = inference_mode();
        using var a = ((ICausalLanguageModel)gqa).Forward(gqa.EmbedTokens(ids), mask, null);
        using var b = ((ICausalLanguageModel)mha).Forward(mha.EmbedTokens(ids), mask, null);
        double error = (a - b).abs().max().item<float>();
        output.WriteLine($"GQA vs copied heads: max abs error {error:E2}, logits up to {a.abs().max().item<float>():F2}");
        Assert.True(error < 1e-5, $"max abs error {error}");
        Assert.True(a.abs().max().item<float>() > 0.1, "the logits are all near zero: the comparison shows nothing");

        // Cached decoding reads the kv-head cache the same way.
        var cache = ((ICausalLanguageModel)gqa).NewCache();
        using var first = ((ICausalLanguageModel)gqa).Forward(gqa.EmbedTokens(ids.narrow(1, 0, 5)), mask.narrow(1, 0, 5), cache);
        using var step = ((ICausalLanguageModel)gqa).Forward(gqa.EmbedTokens(ids.narrow(1, 5, 1)), mask, cache);
        double cached = (step - a.narrow(1, 5, 1)).abs().max().item<float>();
        output.WriteLine($"cached step vs full forward: {cached:E2}");
        Assert.True(cached < 1e-5, $"cached step differs by {cached}");
    }

    [Fact]
    public void Head_dim_and_biases_give_upstream_shapes_and_bad_groupings_are_refused()
    {
        using var model = new LlamaForCausalLM(Small(kvHeads: 2) with { HeadDim = 16, AttentionBias = true, MlpBias = true }, META);
        var state = model.state_dict();
        Assert.Equal(new long[] { 64, 32 }, state["model.layers.1.self_attn.q_proj.weight"].shape);   // 4 heads of 16
        Assert.Equal(new long[] { 32, 32 }, state["model.layers.1.self_attn.k_proj.weight"].shape);   // 2 heads of 16
        Assert.Equal(new long[] { 32, 64 }, state["model.layers.1.self_attn.o_proj.weight"].shape);
        Assert.Contains("model.layers.1.self_attn.o_proj.bias", state.Keys);
        Assert.Contains("model.layers.1.mlp.down_proj.bias", state.Keys);

        var checks = new Multimodal.Common.ConfigChecks("config.json");
        LanguageModels.For(Small(kvHeads: 3)).Validate(Small(kvHeads: 3), checks, "text_config.");
        var e = Assert.Throws<Multimodal.Common.ConfigException>(checks.ThrowIfAny);
        output.WriteLine(e.Message);
        Assert.Contains("text_config.num_attention_heads = 4 is not a multiple of text_config.num_key_value_heads = 3", e.Message);
    }
}
