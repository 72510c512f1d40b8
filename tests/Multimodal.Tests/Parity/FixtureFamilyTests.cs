using Multimodal.Tests.TestSupport;

namespace Multimodal.Tests.Parity;

/// <summary>Every case folder found (built in or from MULTIMODAL_EXTRA_FIXTURES) belongs to a family some
/// parity test checks, so none is silently passed over.</summary>
public sealed class FixtureFamilyTests
{
    public static TheoryData<string> Cases => FixtureCase.Ids();

    [Theory]
    [MemberData(nameof(Cases))]
    public void Every_case_belongs_to_a_checked_family(string caseId) =>
        Assert.True(FixtureCase.Get(caseId).Family != "unknown",
            $"case {caseId}: its first class ({string.Join(", ", FixtureCase.Get(caseId).Classes.Take(1))}) belongs to no model family the parity tests know");
}
