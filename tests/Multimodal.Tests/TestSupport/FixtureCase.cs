using System.Text.Json;
using Multimodal.Loading;
using static TorchSharp.torch;

namespace Multimodal.Tests.TestSupport;

/// <summary>One oracle case folder: config, weights, reference tensors and the manifest describing them.</summary>
public sealed class FixtureCase
{
    /// <summary>Environment variable naming extra case roots, ':'-separated.</summary>
    public const string ExtraRootsVariable = "MULTIMODAL_EXTRA_FIXTURES";

    private FixtureCase(string id, string path)
    {
        Id = id;
        Path = path;
        using var doc = JsonDocument.Parse(File.ReadAllText(System.IO.Path.Combine(path, "manifest.json")));
        Manifest = doc.RootElement.Clone();
    }

    /// <summary>The name shown in test names: the folder name for built-in cases, the full path for extra ones.</summary>
    public string Id { get; }

    /// <summary>The case folder.</summary>
    public string Path { get; }

    /// <summary>manifest.json.</summary>
    public JsonElement Manifest { get; }

    /// <summary>The upstream classes the case exercises.</summary>
    public IReadOnlyList<string> Classes =>
        Manifest.GetProperty("upstream").GetProperty("classes").EnumerateArray().Select(c => c.GetString()!).ToList();

    /// <summary>The model family, from the first upstream class: "blip2", "blip2-retrieval", "flamingo", "idefics", "instructblip", or "unknown".</summary>
    public string Family => Classes.FirstOrDefault() switch
    {
        "Blip2ForImageTextRetrieval" => "blip2-retrieval",
        string c when c.StartsWith("Blip2", StringComparison.Ordinal) => "blip2",
        string c when c.StartsWith("open_flamingo.", StringComparison.Ordinal) => "flamingo",
        string c when c.StartsWith("Idefics", StringComparison.Ordinal) => "idefics",
        string c when c.StartsWith("InstructBlip", StringComparison.Ordinal) => "instructblip",
        _ => "unknown",
    };

    /// <summary>Reference tensor names the manifest lists, with what produced them.</summary>
    public IReadOnlyDictionary<string, string> Tensors =>
        Manifest.GetProperty("tensors").EnumerateObject().ToDictionary(
            p => p.Name, p => p.Value.TryGetProperty("produced_by", out var by) ? by.GetString() ?? "" : "");

    /// <summary>Reference tensors of the forward pass: neither inputs nor generation results.</summary>
    public IReadOnlyList<string> ForwardTensors =>
        Tensors.Where(t => !t.Value.StartsWith("input", StringComparison.Ordinal) && !t.Key.StartsWith("generate_", StringComparison.Ordinal))
            .Select(t => t.Key).ToList();

    /// <summary>Keys of the model's state dict that the weight file omits (tied duplicates).</summary>
    public IReadOnlyList<string> KeysNotInFile =>
        Manifest.TryGetProperty("state_dict_keys_not_in_file", out var keys)
            ? keys.EnumerateArray().Select(k => k.GetString()!).ToList()
            : [];

    /// <summary>Opens reference.safetensors.</summary>
    public SafetensorsFile OpenReference() => SafetensorsFile.Open(System.IO.Path.Combine(Path, "reference.safetensors"));

    /// <summary>The built-in root inside the test output.</summary>
    public static string BuiltInRoot => System.IO.Path.Combine(AppContext.BaseDirectory, "Fixtures");

    /// <summary>Every case folder under the built-in root and the extra roots.</summary>
    public static IReadOnlyList<FixtureCase> All()
    {
        var cases = new List<FixtureCase>();
        foreach (var dir in CaseDirs(BuiltInRoot)) cases.Add(new FixtureCase(System.IO.Path.GetFileName(dir), dir));
        var extra = Environment.GetEnvironmentVariable(ExtraRootsVariable) ?? "";
        foreach (var root in extra.Split(':', StringSplitOptions.RemoveEmptyEntries))
        {
            if (!Directory.Exists(root))
                throw new DirectoryNotFoundException($"{ExtraRootsVariable} names '{root}', which does not exist.");
            foreach (var dir in CaseDirs(root)) cases.Add(new FixtureCase(System.IO.Path.GetFullPath(dir), dir));
        }
        return cases;
    }

    /// <summary>Finds a case by <see cref="Id"/>.</summary>
    public static FixtureCase Get(string id) => All().Single(c => c.Id == id);

    private static IEnumerable<string> CaseDirs(string root) =>
        Directory.Exists(root)
            ? Directory.EnumerateDirectories(root).Where(d => File.Exists(System.IO.Path.Combine(d, "manifest.json"))).Order(StringComparer.Ordinal)
            : [];

    /// <summary>Case ids as theory data, optionally of one family.</summary>
    public static TheoryData<string> Ids(string? family = null)
    {
        var data = new TheoryData<string>();
        foreach (var c in All().Where(c => family is null || c.Family == family)) data.Add(c.Id);
        return data;
    }
}
