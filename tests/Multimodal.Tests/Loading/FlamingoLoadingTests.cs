using System.IO.Compression;
using System.Text;
using System.Text.Json;
using Multimodal.Flamingo;
using Multimodal.Idefics;
using Multimodal.Loading;
using Multimodal.Tests.TestSupport;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace Multimodal.Tests.Loading;

/// <summary>OpenFlamingo's published layouts: the full checkpoint.pt, and the composition of the
/// open_clip tower, the language-model folder and the trainable-only checkpoint.pt; and the restricted
/// unpickler's refusals.</summary>
public sealed class FlamingoLoadingTests(ITestOutputHelper output)
{
    public static TheoryData<string> Cases => FixtureCase.Ids("flamingo");

    internal static FlamingoParts PartsOf(FixtureCase fixture)
    {
        var config = FlamingoConfig.Load(Path.Combine(fixture.Path, "config.json"));
        return new FlamingoParts
        {
            VisionEncoder = Path.Combine(fixture.Path, "vision_encoder.safetensors"),
            OpenClip = JsonSerializer.Deserialize<JsonElement>(File.ReadAllText(Path.Combine(fixture.Path, "open_clip_config.json")))
                .GetProperty("model_cfg").Deserialize<OpenClipModelConfig>(Multimodal.Common.PretrainedConfig.JsonOptions)!,
            LanguageModelFolder = Path.Combine(fixture.Path, "lang_encoder"),
            Adapter = Path.Combine(fixture.Path, "checkpoint_trainable.pt"),
            CrossAttnEveryNLayers = config.CrossAttnEveryNLayers,
            MediaTokenId = config.MediaTokenId,
            EocTokenId = config.EocTokenId,
            PadTokenId = config.PadTokenId,
        };
    }

    private void LogitsMatch(FixtureCase fixture, FlamingoModel model, string what)
    {
        using var reference = fixture.OpenReference();
        using var visionX = reference.Read("vision_x");
        using var langX = reference.Read("lang_x");
        using var mask = reference.Read("attention_mask");
        using var result = model.Forward(visionX, langX, mask);
        using var expected = reference.Read("logits");
        TensorAssert.Close(expected, result.Logits, $"logits ({what})", output);
    }

    [SkippableTheory]
    [MemberData(nameof(Cases))]
    public void The_published_parts_compose_into_the_same_model(string caseId)
    {
        var fixture = FixtureCase.Get(caseId);
        SupportedModels.SkipUnlessSupported(fixture);
        using var composed = FlamingoModel.FromParts(PartsOf(fixture));
        using var full = FlamingoModel.FromPretrained(fixture.Path);
        Assert.Equal(full.Config.Perceiver, composed.Config.Perceiver);
        var a = full.state_dict();
        var b = composed.state_dict();
        Assert.Equal(a.Keys.Order(), b.Keys.Order());
        foreach (var key in a.Keys) Assert.True(a[key].eq(b[key]).all().item<bool>(), $"{key} differs between the full and the composed load");
        output.WriteLine($"case {caseId}: {b.Count} tensors from vision_encoder.safetensors + lang_encoder/ + checkpoint_trainable.pt, equal to model.safetensors");
        LogitsMatch(fixture, composed, "composed");
    }

    [SkippableTheory]
    [MemberData(nameof(Cases))]
    public void The_full_checkpoint_pt_loads_like_the_safetensors(string caseId)
    {
        var fixture = FixtureCase.Get(caseId);
        SupportedModels.SkipUnlessSupported(fixture);
        using var temp = new TempDir();
        File.Copy(Path.Combine(fixture.Path, "config.json"), Path.Combine(temp.Path, "config.json"));
        File.Copy(Path.Combine(fixture.Path, "checkpoint.pt"), Path.Combine(temp.Path, "checkpoint.pt"));
        using var model = FlamingoModel.FromPretrained(temp.Path);
        LogitsMatch(fixture, model, "checkpoint.pt");
    }

    // The published LLaMA-7B folder has 32,000 head rows; OpenFlamingo-9B-deprecated's adapter grows the embeddings to
    // 32,003 and does not carry lm_head.
    [Fact]
    public void A_language_model_folder_saved_before_the_resize_gets_mean_rows_for_the_added_tokens()
    {
        var fixture = FixtureCase.Get("openflamingo-llama");
        using var temp = TempDir.CopyOf(Path.Combine(fixture.Path, "lang_encoder"));
        string weights = Path.Combine(temp.Path, "model.safetensors");
        var tensors = new Dictionary<string, Tensor>();
        using (var file = SafetensorsFile.Open(weights))
            foreach (var name in file.Entries.Keys) tensors[name] = file.Read(name);
        using var storedHead = tensors["lm_head.weight"].clone();
        tensors["lm_head.weight"] = storedHead.narrow(0, 0, 50).clone();
        tensors["model.embed_tokens.weight"] = tensors["model.embed_tokens.weight"].narrow(0, 0, 50).clone();
        SafetensorsWriter.Write(weights, tensors);
        foreach (var t in tensors.Values) t.Dispose();
        string config = Path.Combine(temp.Path, "config.json");
        File.WriteAllText(config, File.ReadAllText(config).Replace("\"vocab_size\": 53", "\"vocab_size\": 50"));

        using var model = FlamingoModel.FromParts(PartsOf(fixture) with { LanguageModelFolder = temp.Path });
        var head = model.state_dict()["lang_encoder.lm_head.weight"];
        Assert.Equal(new long[] { 53, 32 }, head.shape);
        Assert.True(head.narrow(0, 0, 50).eq(storedHead.narrow(0, 0, 50)).all().item<bool>(), "the stored rows changed");
        using var mean = storedHead.narrow(0, 0, 50).to(ScalarType.Float64).mean([0L]).to(ScalarType.Float32);
        for (int row = 50; row < 53; row++)
        {
            double error = (head[row] - mean).abs().max().item<float>();
            output.WriteLine($"row {row}: max abs difference from the mean row {error:E2}");
            Assert.True(error == 0, $"row {row} is not the mean row");
        }
    }

    [Fact]
    public void A_pickle_calling_a_global_outside_the_allowlist_is_refused_without_running_it()
    {
        using var temp = new TempDir();
        string path = Path.Combine(temp.Path, "evil.pt");
        string marker = Path.Combine(temp.Path, "pwned");
        // protocol 2: GLOBAL os.system, MARK, the command, TUPLE, REDUCE, STOP
        var pickle = new List<byte> { 0x80, 2 };
        pickle.AddRange(Encoding.ASCII.GetBytes("cos\nsystem\n("));
        var command = Encoding.UTF8.GetBytes($"touch {marker}");
        pickle.Add((byte)'X');
        pickle.AddRange(BitConverter.GetBytes(command.Length));
        pickle.AddRange(command);
        pickle.AddRange(Encoding.ASCII.GetBytes("tR."));
        using (var zip = ZipFile.Open(path, ZipArchiveMode.Create))
        using (var entry = zip.CreateEntry("evil/data.pkl").Open())
            entry.Write(pickle.ToArray());
        var e = Assert.Throws<CheckpointFormatException>(() => TorchCheckpointFile.Open(path).Dispose());
        output.WriteLine(e.Message);
        Assert.Contains("refused", e.Message);
        Assert.Contains("os.system", e.Message);
        Assert.False(File.Exists(marker));
    }

    [Fact]
    public void A_truncated_checkpoint_pt_is_refused_clearly()
    {
        using var temp = new TempDir();
        string path = Path.Combine(temp.Path, "truncated.pt");
        var bytes = File.ReadAllBytes(Path.Combine(FixtureCase.BuiltInRoot, "openflamingo", "checkpoint_trainable.pt"));
        File.WriteAllBytes(path, bytes[..(bytes.Length / 2)]);
        var e = Assert.Throws<CheckpointFormatException>(() => TorchCheckpointFile.Open(path).Dispose());
        output.WriteLine(e.Message);
        Assert.Contains(path, e.Message);
    }

    [Fact]
    public void A_key_in_two_parts_is_a_conflict()
    {
        var fixture = FixtureCase.Get("openflamingo");
        using var temp = new TempDir();
        // An adapter that also carries a frozen LM weight: both it and the LM folder provide that key.
        using (var adapter = TorchCheckpointFile.Open(Path.Combine(fixture.Path, "checkpoint_trainable.pt")))
        using (var lm = SafetensorsFile.Open(Path.Combine(fixture.Path, "lang_encoder", "model.safetensors")))
        {
            var tensors = adapter.Tensors.Keys.ToDictionary(k => k, adapter.Read);
            tensors["lang_encoder.transformer.norm_f.weight"] = lm.Read("transformer.norm_f.weight");
            SafetensorsWriter.Write(Path.Combine(temp.Path, "adapter.safetensors"), tensors);
            foreach (var t in tensors.Values) t.Dispose();
        }
        var parts = PartsOf(fixture) with { Adapter = Path.Combine(temp.Path, "adapter.safetensors") };
        var e = Assert.Throws<CheckpointFormatException>(() => FlamingoModel.FromParts(parts).Dispose());
        output.WriteLine(e.Message);
        Assert.Contains("lang_encoder.transformer.norm_f.weight: provided by both language model and adapter", e.Message);
    }
}

/// <summary>IDEFICS as published: sharded safetensors in bfloat16.</summary>
public sealed class IdeficsLoadingTests(ITestOutputHelper output)
{
    [Fact]
    public void Sharded_bfloat16_weights_load_into_float32_exactly()
    {
        var fixture = FixtureCase.Get("idefics");
        using var temp = new TempDir();
        File.Copy(Path.Combine(fixture.Path, "config.json"), Path.Combine(temp.Path, "config.json"));
        using var file = SafetensorsFile.Open(Path.Combine(fixture.Path, "model.safetensors"));
        var names = file.Entries.Keys.ToList();
        var weightMap = new SortedDictionary<string, string>(StringComparer.Ordinal);
        for (int s = 0; s < 2; s++)
        {
            string shard = $"model-{s + 1:D5}-of-00002.safetensors";
            var part = names.Where((_, i) => i % 2 == s).ToDictionary(n => n, n => file.Read(n).to(ScalarType.BFloat16));
            SafetensorsWriter.Write(Path.Combine(temp.Path, shard), part);
            foreach (var (n, t) in part) { weightMap[n] = shard; t.Dispose(); }
        }
        File.WriteAllText(Path.Combine(temp.Path, CheckpointFolder.IndexFile), JsonSerializer.Serialize(new { metadata = new { }, weight_map = weightMap }));
        using var model = IdeficsForVisionText2Text.FromPretrained(temp.Path);
        var state = model.state_dict();
        Tensor Rounded(string name) => file.Read(name).to(ScalarType.BFloat16).to(ScalarType.Float32);
        // The vision tower's names go through IDEFICS' key map; its q/k/v are stacked into one tensor.
        var byModelKey = names.ToDictionary(IdeficsKeyMap.Map.ToModelKey);
        int composed = 0;
        foreach (var (key, loaded) in state)
        {
            using var scope = NewDisposeScope();
            var rule = IdeficsKeyMap.Map.Composites.FirstOrDefault(r => WeightMap.ToRegex(r.ModelPattern).IsMatch(key));
            var expected = rule is null
                ? Rounded(byModelKey[key])
                : rule.Combine(rule.PublishedPatterns.Select(p => Rounded(WeightMap.Substitute(p, WeightMap.ToRegex(rule.ModelPattern).Match(key)))).ToList());
            if (rule is not null) composed++;
            Assert.True(expected.eq(loaded).all().item<bool>(), $"{key} was not loaded as its bfloat16 value");
        }
        output.WriteLine($"{names.Count} bfloat16 tensors from 2 shards loaded into float32 exactly ({state.Count} model keys, {composed} stacked from q/k/v)");
    }
}
