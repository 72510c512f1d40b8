using System.Text.Json;
using Multimodal.Blip2;
using Multimodal.Loading;
using Multimodal.Tests.TestSupport;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace Multimodal.Tests.Parity;

/// <summary>Data-driven parity over every fixture case: structure, forward intermediates and sharded
/// loading against the upstream reference tensors.</summary>
public sealed class Blip2ParityTests(ITestOutputHelper output)
{
    public static TheoryData<string> Cases => FixtureCase.Ids("blip2");

    [SkippableTheory]
    [MemberData(nameof(Cases))]
    public void State_dict_names_and_shapes_equal_the_published_file(string caseId)
    {
        var fixture = FixtureCase.Get(caseId);
        SupportedModels.SkipUnlessSupported(fixture);
        var config = Blip2Config.Load(Path.Combine(fixture.Path, "config.json"));
        using var model = new Blip2ForConditionalGeneration(config, META);
        StructureAssert.StateDictEqualsFile(model, fixture, output);
    }

    [SkippableTheory]
    [MemberData(nameof(Cases))]
    public void Forward_intermediates_match_the_reference(string caseId)
    {
        var fixture = FixtureCase.Get(caseId);
        SupportedModels.SkipUnlessSupported(fixture);
        using var model = Blip2ForConditionalGeneration.FromPretrained(fixture.Path);
        using var reference = fixture.OpenReference();
        using var result = RunForward(model, reference);
        StructureAssert.ForwardTensorsMatch(fixture, reference, result.ByReferenceName, output);
    }

    [SkippableTheory]
    [MemberData(nameof(Cases))]
    public void A_sharded_copy_loads_the_same(string caseId)
    {
        var fixture = FixtureCase.Get(caseId);
        SupportedModels.SkipUnlessSupported(fixture);
        using var temp = new TempDir();
        int shards = WriteShardedCopy(fixture.Path, temp.Path, shardCount: 3);

        using var reference = fixture.OpenReference();
        using var single = Blip2ForConditionalGeneration.FromPretrained(fixture.Path);
        using var sharded = Blip2ForConditionalGeneration.FromPretrained(temp.Path);
        using var a = RunForward(single, reference);
        using var b = RunForward(sharded, reference);
        Assert.True(a.Logits.eq(b.Logits).all().item<bool>(), "logits from the sharded copy differ from the single file");
        using var expected = reference.Read("logits");
        output.WriteLine($"case {caseId}: {shards} shards");
        TensorAssert.Close(expected, b.Logits, "logits (sharded)", output);
    }

    internal static Blip2ForwardOutput RunForward(Blip2ForConditionalGeneration model, SafetensorsFile reference)
    {
        using var pixels = reference.Read("pixel_values");
        using var ids = reference.Read("input_ids");
        using var mask = reference.Read("attention_mask");
        using var decoderIds = reference.Entries.ContainsKey("decoder_input_ids") ? reference.Read("decoder_input_ids") : null;
        return model.Forward(pixels, ids, mask, decoderIds);
    }

    /// <summary>Splits a folder's model.safetensors into shards with an index, as save_pretrained does.</summary>
    internal static int WriteShardedCopy(string source, string destination, int shardCount)
    {
        File.Copy(Path.Combine(source, "config.json"), Path.Combine(destination, "config.json"));
        using var file = SafetensorsFile.Open(Path.Combine(source, "model.safetensors"));
        var names = file.Entries.Keys.ToList();
        var weightMap = new SortedDictionary<string, string>(StringComparer.Ordinal);
        int perShard = (names.Count + shardCount - 1) / shardCount;
        for (int s = 0; s < shardCount; s++)
        {
            string shardName = $"model-{s + 1:D5}-of-{shardCount:D5}.safetensors";
            var part = names.Skip(s * perShard).Take(perShard).ToList();
            var tensors = part.Select(n => new KeyValuePair<string, Tensor>(n, file.Read(n))).ToList();
            SafetensorsWriter.Write(Path.Combine(destination, shardName), tensors, new Dictionary<string, string> { ["format"] = "pt" });
            foreach (var (n, t) in tensors) { weightMap[n] = shardName; t.Dispose(); }
        }
        var index = new { metadata = new { total_size = file.Entries.Values.Sum(e => e.ByteLength) }, weight_map = weightMap };
        File.WriteAllText(Path.Combine(destination, CheckpointFolder.IndexFile), JsonSerializer.Serialize(index));
        return shardCount;
    }
}
