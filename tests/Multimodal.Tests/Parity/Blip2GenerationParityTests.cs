using System.Text.Json;
using Multimodal.Blip2;
using Multimodal.Generation;
using Multimodal.Tests.TestSupport;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace Multimodal.Tests.Parity;

/// <summary>Data-driven generation parity: every <c>generate_&lt;variant&gt;_ids</c> of every supported case,
/// run with the kwargs its manifest records, must give identical ids; scores where the case has them
/// must match to 1e-4.</summary>
public sealed class Blip2GenerationParityTests(ITestOutputHelper output)
{
    /// <summary>Reference-name variant → manifest kwargs key.</summary>
    private static readonly Dictionary<string, string> KwargsOf = new()
    {
        ["greedy"] = "greedy_kwargs",
        ["beam3"] = "beam_kwargs",
        ["greedy_reppen2"] = "reppen_kwargs",
        ["greedy_cache"] = "greedy_cache_kwargs",
    };

    public static TheoryData<string, string> Variants() => VariantsOf("blip2");

    /// <summary>(case, variant) for every <c>generate_&lt;variant&gt;_ids</c> of the family's cases.</summary>
    internal static TheoryData<string, string> VariantsOf(string family)
    {
        var data = new TheoryData<string, string>();
        foreach (var fixture in FixtureCase.All().Where(f => f.Family == family))
            foreach (var name in fixture.Tensors.Keys.Where(n => n.StartsWith("generate_", StringComparison.Ordinal) && n.EndsWith("_ids", StringComparison.Ordinal)))
                data.Add(fixture.Id, name["generate_".Length..^"_ids".Length]);
        return data;
    }

    [SkippableTheory]
    [MemberData(nameof(Variants))]
    public void Generated_ids_and_scores_match_the_reference(string caseId, string variant)
    {
        var fixture = FixtureCase.Get(caseId);
        SupportedModels.SkipUnlessSupported(fixture);
        var (kwargs, options) = OptionsFor(fixture, variant);
        using var model = Blip2ForConditionalGeneration.FromPretrained(fixture.Path);
        using var reference = fixture.OpenReference();
        using var pixels = reference.Read("pixel_values");
        using var ids = reference.Read("input_ids");
        using var mask = reference.Read("attention_mask");
        using var result = model.Generate(pixels, ids, mask, options);
        output.WriteLine($"case {caseId}, {variant}: {kwargs}");
        CompareGeneration(fixture, reference, variant, result, output);
    }

    /// <summary>The manifest's kwargs for a variant, as options that keep the per-step scores.</summary>
    internal static (string Kwargs, GenerationOptions Options) OptionsFor(FixtureCase fixture, string variant)
    {
        Assert.True(KwargsOf.TryGetValue(variant, out var kwargsKey), $"no kwargs mapping for variant {variant}");
        var kwargs = fixture.Manifest.GetProperty("generation").GetProperty(kwargsKey);
        return (kwargs.GetRawText(), ToOptions(kwargs) with { OutputScores = true });
    }

    /// <summary>What a generation reference tensor holds, by its name's ending (longest first).</summary>
    internal static readonly string[] GenerationKinds = ["sequences_scores", "scores", "logits", "ids"];

    /// <summary>(variant, kind) of a <c>generate_&lt;variant&gt;_&lt;kind&gt;</c> name, or null when it is not one.</summary>
    internal static (string Variant, string Kind)? ParseGenerationName(string name)
    {
        if (!name.StartsWith("generate_", StringComparison.Ordinal)) return null;
        foreach (var kind in GenerationKinds)
            if (name.EndsWith("_" + kind, StringComparison.Ordinal) && name.Length > "generate_".Length + kind.Length + 1)
                return (name["generate_".Length..^(kind.Length + 1)], kind);
        return null;
    }

    /// <summary>Whether a variant's kwargs are known to the harness (so its tensors are compared).</summary>
    internal static bool HasKwargs(string variant) => KwargsOf.ContainsKey(variant);

    /// <summary>Every reference tensor of the variant: ids exactly; per-step processed scores, per-step raw
    /// logits and beam sequence scores to 1e-4. A tensor of the variant the harness cannot compare fails.</summary>
    internal static void CompareGeneration(FixtureCase fixture, Multimodal.Loading.SafetensorsFile reference, string variant,
        GenerationOutput result, ITestOutputHelper output)
    {
        var names = reference.Entries.Keys.Where(n => ParseGenerationName(n)?.Variant == variant).Order(StringComparer.Ordinal).ToList();
        Assert.Contains($"generate_{variant}_ids", names);
        foreach (var name in names)
        {
            using var expected = reference.Read(name);
            switch (ParseGenerationName(name)!.Value.Kind)
            {
                case "ids":
                    using (var actualIds = result.ToTensor())
                    {
                        output.WriteLine($"  expected ids {Format(expected)}");
                        output.WriteLine($"  actual   ids {Format(actualIds)}");
                        TensorAssert.Close(expected, actualIds, name, output);
                    }
                    break;
                case "scores":
                    TensorAssert.Close(expected, result.StepScores!, name, output);
                    break;
                case "logits":
                    TensorAssert.Close(expected, result.StepLogits!, name, output);
                    break;
                case "sequences_scores":
                    using (var actual = tensor(result.Scores.Select(s => (float)s).ToArray()))
                        TensorAssert.Close(expected, actual, name, output);
                    break;
            }
        }
    }

    /// <summary>Maps upstream generate() kwargs onto options; an unknown kwarg fails the test rather than being ignored.</summary>
    internal static GenerationOptions ToOptions(JsonElement kwargs)
    {
        var options = new GenerationOptions();
        foreach (var p in kwargs.EnumerateObject())
        {
            options = p.Name switch
            {
                "max_new_tokens" => options with { MaxNewTokens = p.Value.GetInt32() },
                "max_length" => options with { MaxLength = p.Value.GetInt32() },
                "min_length" => options with { MinLength = p.Value.GetInt32() },
                "min_new_tokens" => options with { MinNewTokens = p.Value.GetInt32() },
                "do_sample" => options with { DoSample = p.Value.GetBoolean() },
                "num_beams" => options with { NumBeams = p.Value.GetInt32() },
                "repetition_penalty" => options with { RepetitionPenalty = p.Value.GetDouble() },
                "length_penalty" => options with { LengthPenalty = p.Value.GetDouble() },
                "use_cache" => options with { UseCache = p.Value.GetBoolean() },
                "eos_token_id" => options with { EosTokenIds = [p.Value.GetInt64()] },
                "pad_token_id" => options with { PadTokenId = p.Value.GetInt64() },
                _ => throw new NotSupportedException($"generate() kwarg {p.Name} has no mapping in the test"),
            };
        }
        return options;
    }

    private static string Format(Tensor ids) =>
        string.Join(" | ", Enumerable.Range(0, (int)ids.shape[0]).Select(r => string.Join(" ", ids[r].data<long>().ToArray())));
}
