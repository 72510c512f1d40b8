using System.Runtime.InteropServices;
using Multimodal.Processing;

namespace Multimodal.Server;

/// <summary><c>file://</c> image URLs, when <see cref="ServerOptions.AllowFileUrls"/> is on: only regular files under
/// <see cref="ServerOptions.FileUrlRoot"/>, with links and <c>..</c> resolved before the check, no larger than the body
/// limit. Every refusal has the same message, so a client learns nothing about what exists outside the root or why a
/// path was refused; special files (FIFOs, devices, sockets) report no size and are never opened.</summary>
public static partial class FileUrls
{
    /// <summary>The one message for every refusal.</summary>
    public const string Refusal = "The file URL does not name a readable image file under this server's Multimodal:FileUrlRoot.";

    /// <summary>Reads the file a <c>file://</c> URL names.</summary>
    /// <exception cref="OpenAiException">400 <c>invalid_image_url</c> with <see cref="Refusal"/>.</exception>
    public static byte[] Read(string url, ServerOptions server, string param)
    {
        var refused = new OpenAiException(400, Refusal, param, "invalid_image_url");
        if (server.FileUrlRoot is not { Length: > 0 } root) throw refused;
        try
        {
            string? path = Resolve(new Uri(url).LocalPath), top = Resolve(root);
            if (path is null || top is null || !path.StartsWith(top.TrimEnd('/') + "/", StringComparison.Ordinal)) throw refused;
            return ImageDecoder.ReadImageFile(path, server.MaxRequestBodyBytes);
        }
        catch (Exception e) when (e is UriFormatException or IOException or UnauthorizedAccessException or ArgumentException or NotSupportedException
                                      or ImageDecodeException)
        {
            throw refused;
        }
    }

    // The canonical path, every link followed (realpath(3)); null when it does not exist.
    private static string? Resolve(string path)
    {
        if (OperatingSystem.IsWindows())
        {
            var full = Path.GetFullPath(path);
            return File.Exists(full) || Directory.Exists(full) ? full : null;
        }
        nint resolved = RealPath(path, 0);
        if (resolved == 0) return null;
        try { return Marshal.PtrToStringUTF8(resolved); }
        finally { Free(resolved); }
    }

    [LibraryImport("libc", EntryPoint = "realpath", StringMarshalling = StringMarshalling.Utf8)]
    private static partial nint RealPath(string path, nint resolved);

    [LibraryImport("libc", EntryPoint = "free")]
    private static partial void Free(nint pointer);
}
