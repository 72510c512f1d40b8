using System.Text.Json.Nodes;
using Multimodal.Blip2;
using Multimodal.Common;
using Multimodal.InstructBlip;
using Multimodal.Tests.TestSupport;
using Xunit.Abstractions;

namespace Multimodal.Tests.InstructBlip;

/// <summary>InstructBLIP and BLIP-2 folders opened with the other's class, and a text model InstructBLIP is not
/// published with, each get one clear error naming both sides.</summary>
public sealed class InstructBlipRefusalTests(ITestOutputHelper output)
{
    [Fact]
    public void An_InstructBLIP_folder_opened_as_BLIP2_and_the_reverse_name_the_right_class()
    {
        var asBlip2 = Assert.Throws<ConfigException>(() => Blip2ForConditionalGeneration.FromPretrained(FixtureCase.Get("instructblip-vicuna").Path));
        output.WriteLine(asBlip2.Message);
        Assert.Contains("instructblip", asBlip2.Message);
        Assert.Contains("InstructBlipForConditionalGeneration", asBlip2.Message);
        var asInstruct = Assert.Throws<ConfigException>(() => InstructBlipForConditionalGeneration.FromPretrained(FixtureCase.Get("blip2-opt").Path));
        output.WriteLine(asInstruct.Message);
        Assert.Contains("blip-2", asInstruct.Message);
        Assert.Contains("Blip2ForConditionalGeneration", asInstruct.Message);
    }

    [Theory]
    [InlineData("opt")]
    [InlineData("gpt_neox")]
    public void A_text_model_other_than_LLaMA_or_T5_is_refused_naming_the_key(string modelType)
    {
        using var folder = TempDir.CopyOf(FixtureCase.Get("instructblip-vicuna").Path);
        string path = Path.Combine(folder.Path, "config.json");
        var config = JsonNode.Parse(File.ReadAllText(path))!;
        config["text_config"]!["model_type"] = modelType;
        File.WriteAllText(path, config.ToJsonString());
        var e = Assert.Throws<ConfigException>(() => InstructBlipForConditionalGeneration.FromPretrained(folder.Path));
        output.WriteLine(e.Message);
        Assert.Contains("text_config.model_type", e.Message);
        Assert.Contains(modelType, e.Message);
        Assert.Contains("llama", e.Message);
        Assert.Contains("t5", e.Message);
    }

    [Fact]
    public void The_prepended_id_comes_from_text_config_architectures()
    {
        var config = InstructBlipConfig.Load(Path.Combine(FixtureCase.Get("instructblip-vicuna").Path, "config.json"));
        Assert.Equal(2, config.PrependedTokenId);                                           // "LLaMAForCausalLM" → </s>
        var renamed = config with { TextConfig = config.TextConfig with { Architectures = ["LlamaForCausalLM"] } };
        Assert.Equal(0, renamed.PrependedTokenId);                                          // otherwise bos_token_id (0 here)
        Assert.Null((config with { TextConfig = config.TextConfig with { Architectures = null } }).PrependedTokenId);
    }
}
