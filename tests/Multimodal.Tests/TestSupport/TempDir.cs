namespace Multimodal.Tests.TestSupport;

/// <summary>A temporary folder removed on dispose.</summary>
public sealed class TempDir : IDisposable
{
    /// <summary>The folder.</summary>
    public string Path { get; } = Directory.CreateTempSubdirectory("multimodal-test-").FullName;

    /// <summary>Copies a fixture case's files here.</summary>
    public static TempDir CopyOf(string folder)
    {
        var temp = new TempDir();
        foreach (var file in Directory.EnumerateFiles(folder))
            File.Copy(file, System.IO.Path.Combine(temp.Path, System.IO.Path.GetFileName(file)));
        return temp;
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        try { Directory.Delete(Path, recursive: true); } catch (IOException) { }
    }
}
