using System.Text.RegularExpressions;

namespace Multimodal.Loading;

/// <summary>Finds a model where users keep it: a folder, or a Hugging Face hub id resolved offline in the
/// cache that <c>huggingface_hub</c> (v0.25) writes — <c>models--{org}--{name}/refs/{revision}</c> holds a
/// commit hash, <c>snapshots/{hash}/</c> holds the files (symbolic links into <c>blobs/</c>). Nothing is
/// ever downloaded.</summary>
public static partial class HubCache
{
    [GeneratedRegex(@"^(?:[A-Za-z0-9][A-Za-z0-9._-]*/)?[A-Za-z0-9][A-Za-z0-9._-]*$")]
    private static partial Regex RepoIdPattern();

    [GeneratedRegex("^[0-9a-f]{40}$")]
    private static partial Regex CommitPattern();

    /// <summary>The cache folders searched, in order: <c>HF_HUB_CACHE</c> (or the older
    /// <c>HUGGINGFACE_HUB_CACHE</c>), <c>HF_HOME/hub</c>, <c>XDG_CACHE_HOME/huggingface/hub</c>,
    /// <c>~/.cache/huggingface/hub</c>.</summary>
    public static IReadOnlyList<string> CacheFolders()
    {
        var folders = new List<string>();
        void Add(string? path)
        {
            if (string.IsNullOrEmpty(path)) return;
            path = Path.GetFullPath(ExpandHome(path));
            if (!folders.Contains(path)) folders.Add(path);
        }
        Add(Environment.GetEnvironmentVariable("HF_HUB_CACHE"));
        Add(Environment.GetEnvironmentVariable("HUGGINGFACE_HUB_CACHE"));
        if (Environment.GetEnvironmentVariable("HF_HOME") is { Length: > 0 } home) Add(Path.Combine(ExpandHome(home), "hub"));
        if (Environment.GetEnvironmentVariable("XDG_CACHE_HOME") is { Length: > 0 } xdg) Add(Path.Combine(xdg, "huggingface", "hub"));
        Add(Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache", "huggingface", "hub"));
        return folders;
    }

    /// <summary>The folder to load: <paramref name="folderOrId"/> itself when it is a folder, otherwise the
    /// cached snapshot of that hub id at <paramref name="revision"/> (a branch, tag or commit; default
    /// <c>main</c>).</summary>
    /// <exception cref="ArgumentException">the name is empty.</exception>
    /// <exception cref="DirectoryNotFoundException">neither a folder nor a cached model: the message lists
    /// every place looked at and the command that downloads the model.</exception>
    public static string Resolve(string folderOrId, string? revision = null)
    {
        if (string.IsNullOrWhiteSpace(folderOrId))
            throw new ArgumentException("The model is empty: give a checkpoint folder or a hub id such as Salesforce/blip2-opt-2.7b.", nameof(folderOrId));
        if (Directory.Exists(folderOrId) && revision is null) return Path.GetFullPath(folderOrId);
        if (File.Exists(folderOrId))
            throw new DirectoryNotFoundException($"Model '{folderOrId}' is a file; expected a checkpoint folder (config.json, weights, tokenizer files) or a hub id.");
        if (!RepoIdPattern().IsMatch(folderOrId))
            throw new DirectoryNotFoundException($"Checkpoint folder '{Path.GetFullPath(folderOrId)}' does not exist.");

        string rev = revision ?? "main";
        var looked = new List<string>();
        if (revision is null) looked.Add($"{Path.GetFullPath(folderOrId)} (no such folder)");
        string repoFolder = "models--" + folderOrId.Replace("/", "--", StringComparison.Ordinal);
        foreach (var cache in CacheFolders())
        {
            string repo = Path.Combine(cache, repoFolder);
            if (!Directory.Exists(repo))
            {
                looked.Add($"{repo} (not in this cache)");
                continue;
            }
            string? commit = CommitPattern().IsMatch(rev) ? rev : ReadRef(repo, rev);
            if (commit is null)
            {
                looked.Add($"{Path.Combine(repo, "refs", rev)} (no such revision)");
                continue;
            }
            string snapshot = Path.Combine(repo, "snapshots", commit);
            if (Directory.Exists(snapshot)) return snapshot;
            looked.Add($"{snapshot} (revision {rev} points here, but the snapshot is missing)");
        }
        string download = $"huggingface-cli download {folderOrId}" + (revision is null ? "" : $" --revision {revision}");
        throw new DirectoryNotFoundException(
            $"Model '{folderOrId}'{(revision is null ? "" : $" at revision {revision}")} was not found. Looked in: " +
            string.Join("; ", looked) + $". Download it with: {download} (or set HF_HUB_CACHE to the cache that holds it).");
    }

    private static string? ReadRef(string repo, string revision)
    {
        string path = Path.Combine(repo, "refs", revision);
        if (!File.Exists(path)) return null;
        string commit = File.ReadAllText(path).Trim();
        return CommitPattern().IsMatch(commit) ? commit : null;
    }

    private static string ExpandHome(string path) =>
        path == "~" || path.StartsWith("~/", StringComparison.Ordinal)
            ? Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), path.TrimStart('~').TrimStart('/'))
            : path;
}
