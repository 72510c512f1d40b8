using System.Text.Json;
using Multimodal.Blip2;
using Multimodal.Flamingo;
using Multimodal.Generation;
using Multimodal.Idefics;
using Multimodal.InstructBlip;
using Multimodal.Loading;
using Multimodal.Tests.Parity;
using Multimodal.Tests.TestSupport;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace Multimodal.Tests.Loading;

/// <summary>Older revisions and many fine-tunes ship <c>pytorch_model.bin</c>, or shards named by
/// <c>pytorch_model.bin.index.json</c>. A twin of every fixture case in each of those layouts (written in torch's zip
/// format from the case's own tensors) must read the same tensors, bit for bit, and generate the reference's ids.</summary>
public sealed class PickleWeightsTests(ITestOutputHelper output)
{
    public static TheoryData<string, string> Cases()
    {
        var data = new TheoryData<string, string>();
        foreach (var id in FixtureCase.All().Select(c => c.Id))
            foreach (var layout in new[] { "single", "sharded" })
                data.Add(id, layout);
        return data;
    }

    /// <summary>The case's folder with model.safetensors replaced by pickle weights.</summary>
    private static TempDir Twin(FixtureCase fixture, string layout)
    {
        var twin = TempDir.CopyOf(fixture.Path);
        string safetensors = Path.Combine(twin.Path, CheckpointFolder.SingleFile);
        using (var file = SafetensorsFile.Open(safetensors))
        {
            var tensors = file.Entries.Keys.Select(n => KeyValuePair.Create(n, file.Read(n))).ToList();
            if (layout == "single")
                TorchZipWriter.Write(Path.Combine(twin.Path, CheckpointFolder.PickleFile), tensors);
            else
            {
                var weightMap = new SortedDictionary<string, string>(StringComparer.Ordinal);
                int perShard = (tensors.Count + 2) / 3;
                for (int s = 0; s < 3; s++)
                {
                    string shard = $"pytorch_model-{s + 1:D5}-of-00003.bin";
                    var part = tensors.Skip(s * perShard).Take(perShard).ToList();
                    TorchZipWriter.Write(Path.Combine(twin.Path, shard), part);
                    foreach (var (n, _) in part) weightMap[n] = shard;
                }
                File.WriteAllText(Path.Combine(twin.Path, CheckpointFolder.PickleIndexFile),
                    JsonSerializer.Serialize(new { metadata = new { total_size = 0 }, weight_map = weightMap }));
            }
            foreach (var (_, t) in tensors) t.Dispose();
        }
        File.Delete(safetensors);
        foreach (var pt in Directory.GetFiles(twin.Path, "checkpoint*.pt")) File.Delete(pt);   // OpenFlamingo's own format, read elsewhere
        return twin;
    }

    [SkippableTheory]
    [MemberData(nameof(Cases))]
    public void A_pickle_twin_reads_the_same_tensors_and_generates_the_same_ids(string caseId, string layout)
    {
        var fixture = FixtureCase.Get(caseId);
        SupportedModels.SkipUnlessSupported(fixture);
        using var twin = Twin(fixture, layout);
        using (var original = CheckpointFolder.Open(fixture.Path))
        using (var pickled = CheckpointFolder.Open(twin.Path))
        {
            Assert.Equal(original.Tensors.Keys.Order(StringComparer.Ordinal), pickled.Tensors.Keys.Order(StringComparer.Ordinal));
            foreach (var name in original.Tensors.Keys)
            {
                using var a = original.Read(name);
                using var b = pickled.Read(name);
                Assert.True(a.dtype == b.dtype && a.shape.SequenceEqual(b.shape) && a.eq(b).all().item<bool>(), $"{name} differs in the {layout} twin");
                Assert.EndsWith(".bin", pickled.Tensors[name].Origin);
            }
        }

        using var reference = fixture.OpenReference();
        var variant = reference.Entries.ContainsKey("generate_greedy_ids") ? "greedy" : null;
        if (variant is null)
        {
            output.WriteLine($"case {caseId} ({layout}): tensors equal; the case has no generation (retrieval)");
            Assert.Equal("blip2-retrieval", fixture.Family);
            using var itm = Blip2ForImageTextRetrieval.FromPretrained(twin.Path);
            return;
        }
        var (_, options) = Blip2GenerationParityTests.OptionsFor(fixture, variant);
        using var scope = NewDisposeScope();
        GenerationOutput result;
        switch (fixture.Family)
        {
            case "blip2":
                using (var model = Blip2ForConditionalGeneration.FromPretrained(twin.Path))
                    result = model.Generate(reference.Read("pixel_values"), reference.Read("input_ids"), reference.Read("attention_mask"), options);
                break;
            case "instructblip":
                using (var model = InstructBlipForConditionalGeneration.FromPretrained(twin.Path))
                    result = model.Generate(reference.Read("pixel_values"), reference.Read("qformer_input_ids"), reference.Read("qformer_attention_mask"),
                        reference.Read("input_ids"), reference.Read("attention_mask"), options);
                break;
            case "idefics":
                using (var model = IdeficsForVisionText2Text.FromPretrained(twin.Path))
                    result = model.Generate(reference.Read("input_ids"), reference.Read("attention_mask"),
                        reference.Read("pixel_values"), reference.Read("image_attention_mask"), options);
                break;
            case "flamingo":
                using (var model = FlamingoModel.FromPretrained(twin.Path))
                    result = model.Generate(reference.Read("vision_x"), reference.Read("lang_x"), reference.Read("attention_mask"), options);
                break;
            default:
                throw new Xunit.Sdk.XunitException($"no generation for family {fixture.Family}");
        }
        using (result)
        {
            output.WriteLine($"case {caseId} ({layout}): tensors equal; greedy from the twin:");
            Blip2GenerationParityTests.CompareGeneration(fixture, reference, variant, result, output);
        }
    }
}
