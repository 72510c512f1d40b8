using System.Security.Cryptography;
using Multimodal.Blip2;
using Multimodal.Loading;
using Multimodal.Tests.TestSupport;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace Multimodal.Tests.Loading;

/// <summary>A CPU load in the stored dtype maps the file (copy-on-write) instead of copying it; a converting load,
/// a file whose data is not aligned to its element size, and <see cref="SafetensorsFile.MappingVariable"/>=0 copy.
/// Either way every parameter holds exactly the stored values, and nothing is ever written to the file.</summary>
/// <remarks>One class: its tests run one after another, so the environment variable one of them sets is never seen
/// by another of them (other classes that load meanwhile just copy, with the same values).</remarks>
public sealed class MappedLoadTests(ITestOutputHelper output)
{
    private const string Case = "blip2-opt";

    [SkippableFact]
    public void A_same_dtype_cpu_load_maps_the_file_writes_stay_private_and_dispose_unmaps_it()
    {
        Skip.IfNot(OperatingSystem.IsLinux(), "mappings are read from /proc/self/maps (Linux only)");
        using var temp = TempDir.CopyOf(FixtureCase.Get(Case).Path);
        string file = Path.Combine(temp.Path, "model.safetensors");
        string before = Sha256(file);

        var model = Blip2ForConditionalGeneration.FromPretrained(temp.Path);
        try
        {
            Assert.True(IsMapped(file), "the weights file should be mapped after a float32 CPU load");
            AssertHoldsStoredValues(model, file);
            using (no_grad())
                foreach (var p in model.parameters()) p.mul_(2);   // copy-on-write: private pages, the file keeps its bytes
        }
        finally
        {
            model.Dispose();
        }
        Assert.Equal(before, Sha256(file));
        GC.Collect();
        GC.WaitForPendingFinalizers();
        Assert.False(IsMapped(file), "disposing the model should release the mapping");
        output.WriteLine($"{Case}: mapped, values exact, in-place writes left the file's sha256 {before[..12]}… unchanged, unmapped on dispose");
    }

    [SkippableTheory]
    [InlineData("bfloat16")]
    [InlineData("unaligned")]
    [InlineData("opted-out")]
    public void Loads_that_cannot_or_may_not_map_copy_the_same_values(string why)
    {
        Skip.IfNot(OperatingSystem.IsLinux(), "mappings are read from /proc/self/maps (Linux only)");
        using var temp = TempDir.CopyOf(FixtureCase.Get(Case).Path);
        string file = Path.Combine(temp.Path, "model.safetensors");
        if (why == "unaligned") ShiftDataByOneByte(file);
        string before = Sha256(file);
        ScalarType? dtype = why == "bfloat16" ? ScalarType.BFloat16 : null;
        if (why == "opted-out") Environment.SetEnvironmentVariable(SafetensorsFile.MappingVariable, "0");
        try
        {
            using var model = Blip2ForConditionalGeneration.FromPretrained(temp.Path, dtype: dtype);
            Assert.False(IsMapped(file), $"{why}: the weights should have been copied, not mapped");
            AssertHoldsStoredValues(model, file);
        }
        finally
        {
            Environment.SetEnvironmentVariable(SafetensorsFile.MappingVariable, null);
        }
        Assert.Equal(before, Sha256(file));
        output.WriteLine($"{Case} ({why}): copied, values exact");
    }

    // Every parameter equals its stored tensor (converted to the parameter's dtype, as copy_ converts).
    private static void AssertHoldsStoredValues(nn.Module model, string file)
    {
        using var weights = SafetensorsFile.Open(file);
        var state = model.state_dict();
        int compared = 0;
        foreach (var name in weights.Entries.Keys)
        {
            using var stored = weights.Read(name);
            using var expected = stored.to(state[name].dtype);
            Assert.Equal(expected.shape, state[name].shape);
            Assert.True(expected.eq(state[name]).all().item<bool>(), $"{name} differs from the file");
            compared++;
        }
        Assert.Equal(weights.Entries.Count, compared);
    }

    // Rewrites the file with one more space of header padding, so its data starts at an odd offset.
    private static void ShiftDataByOneByte(string file)
    {
        var bytes = File.ReadAllBytes(file);
        ulong headerLength = BitConverter.ToUInt64(bytes, 0);
        var shifted = new byte[bytes.Length + 1];
        BitConverter.TryWriteBytes(shifted.AsSpan(0, 8), headerLength + 1);
        bytes.AsSpan(8, (int)headerLength).CopyTo(shifted.AsSpan(8));
        shifted[8 + (int)headerLength] = (byte)' ';
        bytes.AsSpan(8 + (int)headerLength).CopyTo(shifted.AsSpan(9 + (int)headerLength));
        Assert.NotEqual(0, (8 + (long)headerLength + 1) % 4);
        File.WriteAllBytes(file, shifted);
    }

    private static bool IsMapped(string file) =>
        File.ReadLines("/proc/self/maps").Any(line => line.EndsWith(" " + Path.GetFullPath(file), StringComparison.Ordinal));

    private static string Sha256(string file) => Convert.ToHexString(SHA256.HashData(File.ReadAllBytes(file)));
}
