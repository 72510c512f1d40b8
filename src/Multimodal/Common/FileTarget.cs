namespace Multimodal.Common;

/// <summary>The file a path names once symbolic links are followed. <see cref="FileInfo"/> of a link describes the link
/// itself (its length is that of the target's name), so every size check on a user's file goes through here: a Hugging
/// Face cache, for one, holds every file as a link to a blob.</summary>
internal static class FileTarget
{
    /// <summary>The final target of <paramref name="path"/>, or the path itself when it is no link.</summary>
    /// <exception cref="IOException">the link cannot be followed (a loop).</exception>
    /// <returns>null for a dangling link.</returns>
    public static FileInfo? Resolve(string path)
    {
        var entry = new FileInfo(path);
        if (entry.LinkTarget is null) return entry;
        var target = entry.ResolveLinkTarget(returnFinalTarget: true);
        return target is null || !target.Exists ? null : new FileInfo(target.FullName);
    }
}
