using Multimodal.Tests.TestSupport;

namespace Multimodal.Tests.Parity;

/// <summary>The parity harness misses nothing: every tensor in a case's reference.safetensors is an input the
/// tests feed, a forward tensor the family's forward test compares (each forward test iterates
/// <see cref="FixtureCase.ForwardTensors"/> and fails on one it cannot produce), or a generation tensor whose
/// variant the generation test runs (<see cref="Blip2GenerationParityTests.CompareGeneration"/> compares every
/// <c>generate_&lt;variant&gt;_*</c> tensor and fails on a kind it does not know).</summary>
public sealed class ReferenceCoverageTests
{
    public static TheoryData<string> Cases => FixtureCase.Ids();

    /// <summary>Families whose generation variants a parity test runs.</summary>
    private static readonly HashSet<string> GeneratingFamilies = ["blip2", "flamingo", "idefics", "instructblip"];

    [SkippableTheory]
    [MemberData(nameof(Cases))]
    public void Every_reference_tensor_is_an_input_or_compared(string caseId)
    {
        var fixture = FixtureCase.Get(caseId);
        SupportedModels.SkipUnlessSupported(fixture);
        using var reference = fixture.OpenReference();
        var inputs = fixture.Tensors.Where(t => t.Value.StartsWith("input", StringComparison.Ordinal)).Select(t => t.Key).ToHashSet();
        var forward = fixture.ForwardTensors.ToHashSet();
        var uncovered = new List<string>();
        foreach (var name in reference.Entries.Keys)
        {
            if (inputs.Contains(name) || forward.Contains(name)) continue;
            if (Blip2GenerationParityTests.ParseGenerationName(name) is { } g && GeneratingFamilies.Contains(fixture.Family)
                && Blip2GenerationParityTests.HasKwargs(g.Variant))
                continue;
            uncovered.Add(name);
        }
        Assert.True(uncovered.Count == 0, $"case {caseId}: nothing compares {string.Join(", ", uncovered)}");
        // And nothing the harness compares is missing from the file.
        var missing = forward.Concat(inputs).Where(n => !reference.Entries.ContainsKey(n)).ToList();
        Assert.True(missing.Count == 0, $"case {caseId}: the manifest lists {string.Join(", ", missing)}, which reference.safetensors lacks");
    }
}
