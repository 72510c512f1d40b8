using Multimodal.Common;
using Multimodal.Generation;
using Multimodal.Loading;
using Multimodal.Processing;
using Multimodal.Tests.TestSupport;
using Xunit.Abstractions;

namespace Multimodal.Tests.Modules;

/// <summary>Saving quantized: the written folder loads already quantized (config.json's quantization_config, the integers
/// and scales in model.safetensors), gives the ids the in-memory quantized model gives, and the source is left as it was.</summary>
public sealed class QuantizedCheckpointTests(ITestOutputHelper output)
{
    [Theory]
    [InlineData("blip2", WeightQuantization.Int8)]
    [InlineData("blip2", WeightQuantization.Int4)]
    [InlineData("instructblip-t5", WeightQuantization.Int4)]
    [InlineData("openflamingo-llama", WeightQuantization.Int8)]
    public async Task A_saved_quantized_folder_reloads_without_quantizing_and_gives_the_same_ids(string family, WeightQuantization kind)
    {
        using var source = family switch
        {
            "blip2" => TempDir.CopyOf(Repo.ShapesModel),
            "instructblip-t5" => InstructBlipT5Folder.Create(),
            _ => FlamingoLlamaFolder.Create(),
        };
        using var target = new TempDir();
        string saved = Path.Combine(target.Path, "quantized");
        var images = new[] { "scene1.png", "scene3.png" }.Select(f => ImageDecoder.Decode(Path.Combine(Repo.Root, "samples", "images", f))).ToList();
        var options = new GenerationOptions { MaxNewTokens = 8 };
        List<IReadOnlyList<long>> expected = [];
        using (var quantized = VisionLanguageModel.FromPretrained(source.Path, quantization: kind))
            foreach (var image in images) expected.Add((await quantized.CaptionAsync(image, options)).Ids);

        VisionLanguageModel.SaveQuantized(source.Path, saved, kind);
        long before = new DirectoryInfo(source.Path).EnumerateFiles("*.safetensors").Sum(f => f.Length);
        long after = new FileInfo(Path.Combine(saved, "model.safetensors")).Length;
        output.WriteLine($"{family} {kind}: model.safetensors {before / 1e6:F2} MB → {after / 1e6:F2} MB");
        Assert.Contains("\"quantization_config\"", File.ReadAllText(Path.Combine(saved, "config.json")));
        using (var file = SafetensorsFile.Open(Path.Combine(saved, "model.safetensors")))
            Assert.Contains(file.Entries.Values, e => e.DType == (kind == WeightQuantization.Int8 ? "I8" : "U8"));

        using var reloaded = VisionLanguageModel.FromPretrained(saved);    // no quantization argument: the folder says it
        for (int i = 0; i < images.Count; i++)
            Assert.Equal(expected[i], (await reloaded.CaptionAsync(images[i], options)).Ids);

        var again = Assert.Throws<IOException>(() => VisionLanguageModel.SaveQuantized(source.Path, saved, kind));
        Assert.Contains("already holds files", again.Message);
    }

    [Fact]
    public void A_quantization_config_of_another_scheme_is_refused_naming_it()
    {
        using var folder = TempDir.CopyOf(Repo.ShapesModel);
        string config = Path.Combine(folder.Path, "config.json");
        var json = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(config))!;
        json["quantization_config"] = System.Text.Json.Nodes.JsonNode.Parse("""{"quant_method": "gptq", "bits": 4, "group_size": 128}""");
        File.WriteAllText(config, json.ToJsonString());
        var e = Assert.Throws<ConfigException>(() => VisionLanguageModel.FromPretrained(folder.Path).Dispose());
        output.WriteLine(e.Message);
        Assert.Contains("gptq", e.Message);
    }
}
