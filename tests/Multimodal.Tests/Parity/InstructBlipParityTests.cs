using Multimodal.Tests.TestSupport;

namespace Multimodal.Tests.Parity;

/// <summary>The InstructBLIP cases (issue 13). <c>InstructBlipForConditionalGeneration</c> is not implemented yet, so
/// each case is reported as skipped with the class it waits for; when it is, this class gains the structure,
/// forward and generation comparisons the other families have, over every reference tensor.</summary>
public sealed class InstructBlipParityTests
{
    public static TheoryData<string> Cases => FixtureCase.Ids("instructblip");

    [SkippableTheory]
    [MemberData(nameof(Cases))]
    public void Every_reference_tensor_matches(string caseId)
    {
        var fixture = FixtureCase.Get(caseId);
        SupportedModels.SkipUnlessSupported(fixture);
        Assert.Fail($"case {caseId}: its classes are all listed as implemented, but no InstructBLIP comparison is written yet.");
    }
}
