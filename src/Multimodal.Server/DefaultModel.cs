namespace Multimodal.Server;

/// <summary>Where the default model, <c>models/blip2-shapes</c>, is: under the working directory or the
/// application's folder, or a folder above either (the repository root when run from it).</summary>
public static class DefaultModel
{
    /// <summary>The folder (the relative path when it is nowhere to be found, so the load error names it).</summary>
    public static string Find()
    {
        foreach (var start in new[] { Directory.GetCurrentDirectory(), AppContext.BaseDirectory })
            for (var dir = new DirectoryInfo(start); dir is not null; dir = dir.Parent)
            {
                string candidate = Path.Combine(dir.FullName, "models", "blip2-shapes");
                if (File.Exists(Path.Combine(candidate, "config.json"))) return candidate;
            }
        return Path.Combine("models", "blip2-shapes");
    }
}
