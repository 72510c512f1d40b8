using System.Security.Cryptography;
using Multimodal.Blip2;
using Multimodal.Loading;
using Multimodal.Tests.TestSupport;

namespace Multimodal.Tests.Loading;

/// <summary>Hub ids resolved offline in a cache laid out exactly as huggingface_hub lays it out:
/// <c>models--org--name/{blobs,refs,snapshots}</c>, snapshot files as relative symbolic links into blobs/.</summary>
public sealed class HubCacheTests : IDisposable
{
    private const string Commit = "0123456789abcdef0123456789abcdef01234567";
    private const string OtherCommit = "fedcba9876543210fedcba9876543210fedcba98";
    private readonly TempDir _cache = new();

    public void Dispose() => _cache.Dispose();

    /// <summary>Lays out models--project--blip2-shapes with main → <see cref="Commit"/>, tag v1 → <see cref="OtherCommit"/>.</summary>
    private string LayOut()
    {
        string repo = Path.Combine(_cache.Path, "models--project--blip2-shapes");
        Directory.CreateDirectory(Path.Combine(repo, "blobs"));
        Directory.CreateDirectory(Path.Combine(repo, "refs"));
        foreach (var commit in new[] { Commit, OtherCommit })
        {
            string snapshot = Path.Combine(repo, "snapshots", commit);
            Directory.CreateDirectory(snapshot);
            foreach (var file in Directory.EnumerateFiles(Repo.ShapesModel))
            {
                var bytes = File.ReadAllBytes(file);
                string blob = Convert.ToHexStringLower(SHA256.HashData(bytes));
                string blobPath = Path.Combine(repo, "blobs", blob);
                if (!File.Exists(blobPath)) File.WriteAllBytes(blobPath, bytes);
                File.CreateSymbolicLink(Path.Combine(snapshot, Path.GetFileName(file)), Path.Combine("..", "..", "blobs", blob));
            }
        }
        File.WriteAllText(Path.Combine(repo, "refs", "main"), Commit);
        File.WriteAllText(Path.Combine(repo, "refs", "v1"), OtherCommit + "\n");
        return repo;
    }

    [Fact]
    public async Task A_hub_id_loads_from_the_cache_like_the_folder()
    {
        string repo = LayOut();
        string? previous = Environment.GetEnvironmentVariable("HF_HUB_CACHE");
        Environment.SetEnvironmentVariable("HF_HUB_CACHE", _cache.Path);
        try
        {
            Assert.Equal(Path.Combine(repo, "snapshots", Commit), HubCache.Resolve("project/blip2-shapes"));
            Assert.Equal(Path.Combine(repo, "snapshots", OtherCommit), HubCache.Resolve("project/blip2-shapes", "v1"));
            Assert.Equal(Path.Combine(repo, "snapshots", OtherCommit), HubCache.Resolve("project/blip2-shapes", OtherCommit));

            using var fromCache = Blip2Captioner.FromPretrained("project/blip2-shapes");
            using var fromFolder = Blip2Captioner.FromPretrained(Repo.ShapesModel);
            Assert.Equal((await fromFolder.CaptionAsync(Repo.Scene1)).Ids, (await fromCache.CaptionAsync(Repo.Scene1)).Ids);
            using var tagged = Blip2Captioner.FromPretrained("project/blip2-shapes", revision: "v1");
            Assert.NotNull(tagged.Model.GenerationConfig);

            var missingRevision = Assert.Throws<DirectoryNotFoundException>(() => HubCache.Resolve("project/blip2-shapes", "v2"));
            Assert.Contains(Path.Combine(repo, "refs", "v2"), missingRevision.Message);
            Assert.Contains("huggingface-cli download project/blip2-shapes --revision v2", missingRevision.Message);
        }
        finally
        {
            Environment.SetEnvironmentVariable("HF_HUB_CACHE", previous);
        }
    }

    [Fact]
    public void A_missing_model_lists_every_place_looked_at_and_the_download_command()
    {
        var e = Assert.Throws<DirectoryNotFoundException>(() => HubCache.Resolve("nobody/nothing-here"));
        Assert.Contains("nobody/nothing-here", e.Message);
        Assert.Contains(Path.GetFullPath("nobody/nothing-here") + " (no such folder)", e.Message);
        foreach (var cache in HubCache.CacheFolders()) Assert.Contains(Path.Combine(cache, "models--nobody--nothing-here"), e.Message);
        Assert.Contains("huggingface-cli download nobody/nothing-here", e.Message);

        Assert.Contains("does not exist", Assert.Throws<DirectoryNotFoundException>(() => HubCache.Resolve("/no/such/folder/at/all")).Message);
        Assert.Contains("is a file", Assert.Throws<DirectoryNotFoundException>(() => HubCache.Resolve(Repo.Scene1)).Message);
        Assert.Throws<ArgumentException>(() => HubCache.Resolve(" "));
    }

    [Fact]
    public void A_snapshot_the_ref_points_to_but_that_is_gone_is_named()
    {
        string repo = LayOut();
        Directory.Delete(Path.Combine(repo, "snapshots", Commit), recursive: true);
        string? previous = Environment.GetEnvironmentVariable("HF_HUB_CACHE");
        Environment.SetEnvironmentVariable("HF_HUB_CACHE", _cache.Path);
        try
        {
            var e = Assert.Throws<DirectoryNotFoundException>(() => HubCache.Resolve("project/blip2-shapes"));
            Assert.Contains("the snapshot is missing", e.Message);
        }
        finally
        {
            Environment.SetEnvironmentVariable("HF_HUB_CACHE", previous);
        }
    }
}
