using Xunit;

// The RSS and live-tensor measurements need the process to themselves.
[assembly: CollectionBehavior(DisableTestParallelization = true)]
