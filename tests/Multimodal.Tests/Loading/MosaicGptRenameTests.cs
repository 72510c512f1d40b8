using Multimodal.Language.Mpt;
using Multimodal.Loading;
using static TorchSharp.torch;

namespace Multimodal.Tests.Loading;

/// <summary>The mosaic_gpt → MPT rename table: every mosaic_gpt name of an MPT-1B-shaped model maps to
/// exactly one module parameter, and every parameter is hit once.</summary>
public sealed class MosaicGptRenameTests
{
    [Fact]
    public void Every_mosaic_gpt_name_maps_to_exactly_one_parameter()
    {
        var mosaic = new MosaicGptConfig { DModel = 16, NHeads = 2, NLayers = 3, VocabSize = 10, NoBias = false };
        using var model = new MptForCausalLM(mosaic.ToMpt(), META);
        var targets = model.state_dict().Keys.Where(k => k != "lm_head.weight").ToHashSet();
        // mosaic_gpt's names for the same parameters (GPTBlock / MosaicGPT in its modeling code).
        var published = new List<string> { "transformer.wte.weight", "transformer.ln_f.weight", "transformer.ln_f.bias" };
        for (int i = 0; i < 3; i++)
            foreach (var suffix in new[] { "ln_1.weight", "ln_1.bias", "attn.Wqkv.weight", "attn.Wqkv.bias", "attn.out_proj.weight",
                         "attn.out_proj.bias", "ln_2.weight", "ln_2.bias", "mlp.mlp_up.weight", "mlp.mlp_up.bias", "mlp.mlp_down.weight", "mlp.mlp_down.bias" })
                published.Add($"transformer.blocks.{i}.{suffix}");
        // The map the loader builds for a mosaic_gpt folder: its descriptor's renames.
        var map = new WeightMap { Renames = Multimodal.Language.LanguageModels.Find("mosaic_gpt")!.Renames };
        var mapped = published.Select(map.ToModelKey).ToList();
        Assert.Equal(mapped.Count, mapped.Distinct().Count());
        Assert.Equal(targets.Order(), mapped.Order());
    }
}
