using System.Text.Json;
using Multimodal.Blip2;
using Multimodal.Flamingo;
using Multimodal.Loading;
using Multimodal.Tests.TestSupport;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace Multimodal.Tests.Loading;

/// <summary>A checkpoint that does not load names what a user can look for: the file and the file's own key, not the
/// model's key; an index that lists nothing is named as such.</summary>
public sealed class MessageNamingTests(ITestOutputHelper output)
{
    [Fact]
    public void A_tensor_missing_from_an_OpenFlamingo_part_is_named_by_its_key_in_that_parts_file()
    {
        var fixture = FixtureCase.Get("openflamingo");
        using var lm = TempDir.CopyOf(Path.Combine(fixture.Path, "lang_encoder"));
        string weights = Path.Combine(lm.Path, "model.safetensors");
        var kept = new List<KeyValuePair<string, Tensor>>();
        using (var file = SafetensorsFile.Open(weights))
            kept.AddRange(file.Entries.Keys.Where(k => k != "transformer.blocks.1.ffn.down_proj.weight").Select(k => KeyValuePair.Create(k, file.Read(k))));
        SafetensorsWriter.Write(weights, kept);
        foreach (var (_, t) in kept) t.Dispose();

        var parts = FlamingoLoadingTests.PartsOf(fixture) with { LanguageModelFolder = lm.Path };
        var e = Assert.Throws<CheckpointMismatchException>(() => FlamingoModel.FromParts(parts).Dispose());
        output.WriteLine(e.Message);
        var line = Assert.Single(e.Missing);
        Assert.StartsWith("lang_encoder.transformer.blocks.1.decoder_layer.ffn.down_proj.weight", line);
        Assert.Contains($"expected as transformer.blocks.1.ffn.down_proj.weight in the language model ({weights})", line);

        // A perceiver key is the adapter's, under its own name.
        using var adapter = new TempDir();
        string pt = Path.Combine(adapter.Path, "checkpoint.safetensors");
        var adapterTensors = new List<KeyValuePair<string, Tensor>>();
        using (var source = TorchCheckpointFile.Open(parts.Adapter))
            adapterTensors.AddRange(source.Tensors.Keys.Where(k => k != "perceiver.norm.weight").Select(k => KeyValuePair.Create(k, source.Read(k))));
        SafetensorsWriter.Write(pt, adapterTensors);
        foreach (var (_, t) in adapterTensors) t.Dispose();
        e = Assert.Throws<CheckpointMismatchException>(() => FlamingoModel.FromParts(FlamingoLoadingTests.PartsOf(fixture) with { Adapter = pt }).Dispose());
        output.WriteLine(e.Message);
        Assert.Contains($"perceiver.norm.weight [32]: expected as perceiver.norm.weight in the adapter ({pt})", Assert.Single(e.Missing));
    }

    [Theory]
    [InlineData("model.safetensors.index.json")]
    [InlineData("pytorch_model.bin.index.json")]
    public void An_index_with_an_empty_weight_map_is_named_as_such(string index)
    {
        using var folder = new TempDir();
        File.Copy(Path.Combine(FixtureCase.Get("blip2-opt").Path, "config.json"), Path.Combine(folder.Path, "config.json"));
        File.WriteAllText(Path.Combine(folder.Path, index), JsonSerializer.Serialize(new { metadata = new { total_size = 0 }, weight_map = new { } }));
        var e = Assert.Throws<CheckpointFormatException>(() => Blip2ForConditionalGeneration.FromPretrained(folder.Path).Dispose());
        output.WriteLine(e.Message);
        Assert.Contains(Path.Combine(folder.Path, index), e.Message);
        Assert.Contains("\"weight_map\" is empty", e.Message);
    }
}
