using Multimodal.Language.Mpt;
using static TorchSharp.torch;

namespace Multimodal.Tests.Modules;

/// <summary>transformers v4.45.1 <c>MptMLP</c> builds its FFN 4·d_model wide whatever <c>expansion_ratio</c>
/// says, so an HF-format MPT folder with another ratio must load with 4·d_model; mosaic_gpt folders keep
/// their own <c>mlp_ratio</c>.</summary>
public sealed class MptFfnWidthTests
{
    [Theory]
    [InlineData(2)]
    [InlineData(4)]
    [InlineData(6)]
    public void Transformers_mpt_ignores_expansion_ratio_and_mosaic_gpt_keeps_its_ratio(int ratio)
    {
        var hf = System.Text.Json.JsonSerializer.Deserialize<MptConfig>(
            $$"""{"model_type": "mpt", "d_model": 16, "n_heads": 2, "n_layers": 1, "vocab_size": 10, "expansion_ratio": {{ratio}}}""",
            Multimodal.Common.PretrainedConfig.JsonOptions)!;
        Assert.Equal(ratio, hf.ExpansionRatio);
        using (var model = new MptForCausalLM(hf, META))
        {
            var shapes = model.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.shape);
            Assert.Equal([64L, 16], shapes["transformer.blocks.0.ffn.up_proj.weight"]);
            Assert.Equal([16L, 64], shapes["transformer.blocks.0.ffn.down_proj.weight"]);
        }
        var mosaic = new MosaicGptConfig { DModel = 16, NHeads = 2, NLayers = 1, VocabSize = 10, MlpRatio = ratio };
        using (var model = new MptForCausalLM(mosaic.ToMpt(), META))
        {
            var shapes = model.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.shape);
            Assert.Equal([16L * ratio, 16], shapes["transformer.blocks.0.ffn.up_proj.weight"]);
        }
    }
}
