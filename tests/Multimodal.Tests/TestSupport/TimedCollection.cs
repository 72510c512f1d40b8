namespace Multimodal.Tests.TestSupport;

/// <summary>Tests that bound a wall-clock time (issue 19: hostile sizes answered in milliseconds; a disposed façade's
/// running call ending within a second) run in this collection, alone, after the parallel ones: beside browsers, server processes and model loads on two cores, a 44 ms
/// refusal was once measured at 866 ms, which says nothing about the code.</summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class TimedCollection
{
    public const string Name = "timed, run alone";
}
