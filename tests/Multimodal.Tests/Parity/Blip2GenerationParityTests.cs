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

    /// <summary>Ids exactly; per-step scores and beam sequence scores to 1e-4, where the case has them.</summary>
    internal static void CompareGeneration(FixtureCase fixture, Multimodal.Loading.SafetensorsFile reference, string variant,
        GenerationOutput result, ITestOutputHelper output)
    {
        using var expectedIds = reference.Read($"generate_{variant}_ids");
        using var actualIds = result.ToTensor();
        output.WriteLine($"  expected ids {Format(expectedIds)}");
        output.WriteLine($"  actual   ids {Format(actualIds)}");
        TensorAssert.Close(expectedIds, actualIds, $"generate_{variant}_ids", output);
        if (fixture.Tensors.ContainsKey($"generate_{variant}_scores"))
        {
            using var expectedScores = reference.Read($"generate_{variant}_scores");
            TensorAssert.Close(expectedScores, result.StepScores!, $"generate_{variant}_scores", output);
        }
        if (fixture.Tensors.ContainsKey($"generate_{variant}_sequences_scores"))
        {
            using var expected = reference.Read($"generate_{variant}_sequences_scores");
            using var actual = tensor(result.Scores.Select(s => (float)s).ToArray());
            TensorAssert.Close(expected, actual, $"generate_{variant}_sequences_scores", output);
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
