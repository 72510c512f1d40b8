using Multimodal.Blip2;
using Multimodal.Flamingo;
using Multimodal.Loading;
using Multimodal.Tests.TestSupport;
using Xunit.Abstractions;

namespace Multimodal.Tests.Loading;

/// <summary>Weight files that are not regular files — a symbolic link loop, a dangling link, a device, a
/// FIFO, a directory — are refused with the checkpoint exception naming the path, and nothing blocks.</summary>
public sealed class FileKindTests(ITestOutputHelper output) : IDisposable
{
    private readonly TempDir _folder = TempDir.CopyOf(FixtureCase.Get("blip2-opt").Path);

    public void Dispose() => _folder.Dispose();

    private string Weights => Path.Combine(_folder.Path, "model.safetensors");

    private void Refused(string expected)
    {
        var e = Assert.Throws<CheckpointFormatException>(() => Blip2ForConditionalGeneration.FromPretrained(_folder.Path).Dispose());
        output.WriteLine(e.Message);
        Assert.Contains(Weights, e.Message);
        Assert.Contains(expected, e.Message);
    }

    [Fact]
    public void A_symbolic_link_loop_is_refused()
    {
        File.Delete(Weights);
        File.CreateSymbolicLink(Weights, Path.Combine(_folder.Path, "other.safetensors"));
        File.CreateSymbolicLink(Path.Combine(_folder.Path, "other.safetensors"), Weights);
        Refused("cannot be followed");
    }

    [Fact]
    public void A_dangling_link_is_refused()
    {
        File.Delete(Weights);
        File.CreateSymbolicLink(Weights, Path.Combine(_folder.Path, "gone.safetensors"));
        Refused("does not exist");
    }

    [SkippableFact]
    public void Devices_and_pipes_are_refused_without_blocking()
    {
        Skip.IfNot(OperatingSystem.IsLinux(), "device files and mkfifo are checked on Linux");
        File.Delete(Weights);
        File.CreateSymbolicLink(Weights, "/dev/zero");
        Refused("not a regular file");

        File.Delete(Weights);
        var mkfifo = Repo.Run("mkfifo", [Weights], _folder.Path, TimeSpan.FromSeconds(10));
        Assert.Equal(0, mkfifo.ExitCode);
        var load = Task.Run(() => Assert.Throws<CheckpointFormatException>(() => Blip2ForConditionalGeneration.FromPretrained(_folder.Path).Dispose()));
        Assert.True(load.Wait(TimeSpan.FromSeconds(20)), "loading a FIFO blocked");
        Assert.Contains("not a regular file", load.Result.Message);
    }

    [Fact]
    public void A_directory_in_place_of_a_file_and_a_pt_loop_are_refused()
    {
        File.Delete(Weights);
        Directory.CreateDirectory(Weights);
        Refused("directory");

        using var temp = new TempDir();
        string pt = Path.Combine(temp.Path, "checkpoint.pt");
        File.CreateSymbolicLink(pt, pt);
        var e = Assert.Throws<CheckpointFormatException>(() => TorchCheckpointFile.Open(pt).Dispose());
        Assert.Contains(pt, e.Message);
    }
}
