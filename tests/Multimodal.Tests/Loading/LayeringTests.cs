using System.Text.RegularExpressions;
using Multimodal.Tests.TestSupport;
using Xunit.Abstractions;

namespace Multimodal.Tests.Loading;

/// <summary>The library's layering, checked on its sources so the rule outlives any one change: the lower folders
/// (Common, Loading, Processing, Generation, Vision) name no family folder and no language model, by a using directive
/// or a qualified name; no Language/&lt;X&gt; names another Language/&lt;Y&gt; (shared blocks live in Language/).</summary>
public sealed partial class LayeringTests(ITestOutputHelper output)
{
    private static readonly string Source = Path.Combine(Repo.Root, "src", "Multimodal");
    private static readonly string[] Lower = ["Common", "Loading", "Processing", "Generation", "Vision"];
    private static readonly string[] Above = ["Blip2", "Flamingo", "Idefics", "InstructBlip", "Chat", "QFormer", "Language"];

    [GeneratedRegex(@"^\s*(//|///|\*)")]
    private static partial Regex Comment();

    // Every namespace a line names: using directives and qualified references (Multimodal.X, or X. from inside Multimodal).
    private static IEnumerable<string> Named(string line, IEnumerable<string> candidates) =>
        candidates.Where(c => Regex.IsMatch(line, $@"(\bMultimodal\.|[^\w.]){Regex.Escape(c)}\.") || Regex.IsMatch(line, $@"^using Multimodal\.{Regex.Escape(c)};"));

    private static IEnumerable<(string File, int Line, string Text)> Lines(string folder) =>
        Directory.EnumerateFiles(Path.Combine(Source, folder), "*.cs", SearchOption.AllDirectories)
            .Where(f => !f.Contains($"{Path.DirectorySeparatorChar}obj{Path.DirectorySeparatorChar}"))
            .SelectMany(f => File.ReadLines(f).Select((text, i) => (File: Path.GetRelativePath(Source, f), Line: i + 1, Text: text)))
            .Where(l => !Comment().IsMatch(l.Text));

    [Fact]
    public void Lower_folders_name_no_family_and_no_language_model()
    {
        var found = Lower.SelectMany(folder => Lines(folder).SelectMany(l => Named(l.Text, Above).Select(n => $"{l.File}:{l.Line} names {n}: {l.Text.Trim()}"))).ToList();
        foreach (var f in found) output.WriteLine(f);
        Assert.Empty(found);
    }

    [Fact]
    public void No_language_model_names_another()
    {
        var models = Directory.GetDirectories(Path.Combine(Source, "Language")).Select(Path.GetFileName).OfType<string>().ToList();
        Assert.True(models.Count >= 5, "Language/ lost its model folders");
        var found = models.SelectMany(model => Lines(Path.Combine("Language", model))
            .SelectMany(l => Named(l.Text, models.Where(m => m != model).Select(m => "Language." + m)).Select(n => $"{l.File}:{l.Line} names {n}"))).ToList();
        foreach (var f in found) output.WriteLine(f);
        Assert.Empty(found);
    }

    // Language-model knowledge lives in each model's descriptor: the rest of the library asks it instead of testing
    // config types, so a new language model touches only its folder.
    [Fact]
    public void Only_a_language_model_folder_names_its_text_config_type()
    {
        var configTypes = typeof(Multimodal.Language.TextConfig).Assembly.GetTypes()
            .Where(t => t.IsSubclassOf(typeof(Multimodal.Language.TextConfig)) && t != typeof(Multimodal.Language.UnsupportedTextConfig))
            .Select(t => t.Name).ToList();
        Assert.True(configTypes.Count >= 6, $"found only {string.Join(", ", configTypes)}");
        var modelFolders = Directory.GetDirectories(Path.Combine(Source, "Language")).Select(d => Path.GetRelativePath(Source, d) + Path.DirectorySeparatorChar).ToList();
        var found = Directory.GetDirectories(Source).Select(Path.GetFileName).OfType<string>().Where(d => d is not ("obj" or "bin"))
            .Append("")   // files at the root
            .SelectMany(folder => folder == "" ? RootLines() : Lines(folder))
            .Where(l => !modelFolders.Any(m => l.File.StartsWith(m, StringComparison.Ordinal)))
            .SelectMany(l => configTypes.Where(t => Regex.IsMatch(l.Text, $@"\b{t}\b")).Select(t => $"{l.File}:{l.Line} names {t}: {l.Text.Trim()}"))
            .ToList();
        foreach (var f in found) output.WriteLine(f);
        Assert.Empty(found);
    }

    private static IEnumerable<(string File, int Line, string Text)> RootLines() =>
        Directory.EnumerateFiles(Source, "*.cs", SearchOption.TopDirectoryOnly)
            .SelectMany(f => File.ReadLines(f).Select((text, i) => (File: Path.GetFileName(f), Line: i + 1, Text: text)))
            .Where(l => !Comment().IsMatch(l.Text));
}
