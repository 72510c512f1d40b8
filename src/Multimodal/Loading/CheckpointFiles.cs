namespace Multimodal.Loading;

/// <summary>Checks a weight file before it is opened: a symbolic link loop, a dangling link, or something
/// that is not a regular file (a device, a FIFO — opening one can block forever) is refused as a
/// <see cref="CheckpointFormatException"/> naming the path.</summary>
internal static class CheckpointFiles
{
    /// <summary>Whether anything is at <paramref name="path"/> (a directory, a dangling or looping link included), so
    /// that what is wrong with it is reported instead of "missing".</summary>
    public static bool EntryExists(string path) => File.Exists(path) || Directory.Exists(path) || new FileInfo(path).LinkTarget is not null;

    /// <summary>The regular file behind <paramref name="path"/> (following links), ready to open.</summary>
    /// <param name="path">the file.</param>
    /// <param name="minimumBytes">the smallest size a valid file of this kind has.</param>
    /// <returns>the file the links lead to, whose length is the data's.</returns>
    /// <exception cref="FileNotFoundException">nothing is there.</exception>
    /// <exception cref="CheckpointFormatException">a link loop, a dangling link, or not a regular file.</exception>
    public static FileInfo RequireRegularFile(string path, long minimumBytes)
    {
        FileInfo? entry;
        try
        {
            entry = Common.FileTarget.Resolve(path);
        }
        catch (IOException e)
        {
            throw new CheckpointFormatException(path, $"the symbolic link cannot be followed (a loop?): {e.Message}");
        }
        if (entry is null)
            throw new CheckpointFormatException(path, $"the symbolic link points to '{new FileInfo(path).LinkTarget}', which does not exist.");
        if (Directory.Exists(entry.FullName)) throw new CheckpointFormatException(path, "it is a directory, not a file.");
        if (!entry.Exists) throw new FileNotFoundException($"Checkpoint file '{path}' does not exist.", path);
        // Devices and FIFOs report no length; a real weight file is never that small.
        if (entry.Length < minimumBytes)
            throw new CheckpointFormatException(path, entry.Length == 0
                ? "it is empty, or not a regular file (a device or pipe)."
                : $"the file is {entry.Length} bytes, shorter than the {minimumBytes} bytes any valid file of this kind has.");
        return entry;
    }
}
