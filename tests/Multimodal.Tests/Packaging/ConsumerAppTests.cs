using System.Security.Cryptography;
using System.Text;
using System.Text.RegularExpressions;
using Multimodal.Tests.TestSupport;
using Xunit.Abstractions;

namespace Multimodal.Tests.Packaging;

/// <summary>The package as a new user meets it: packed into a local feed, referenced with a CPU backend by a
/// fresh console app in a folder outside the repository (so none of this repository's build files reach it),
/// built, run and published. The app captions scene1.png with models/blip2-shapes, and runs every C# snippet of
/// README.md and the package README with their names substituted: BLIP-2 checkpoints by models/blip2-shapes,
/// images by scene1.png, the other families by runnable copies of their fixtures.</summary>
public sealed partial class ConsumerAppTests(ITestOutputHelper output) : IDisposable
{
    private const string PackageId = "Multimodal.TorchSharp";
    private readonly TempDir _work = new();

    public void Dispose() => _work.Dispose();

    [GeneratedRegex("```csharp\\n(.*?)```", RegexOptions.Singleline)]
    private static partial Regex CSharpBlock();

    [GeneratedRegex(@"^using (static )?[A-Za-z_][\w.]*( = [\w.<>]+)?;$")]
    private static partial Regex UsingDirective();

    private static string Packages => Environment.GetEnvironmentVariable("NUGET_PACKAGES")
                               ?? Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".nuget", "packages");

    private (int ExitCode, string Stdout, string Stderr) Dotnet(string workingDirectory, params string[] args)
    {
        // A child build must not inherit the test host's MSBuild settings, nor leave build servers running.
        var environment = Environment.GetEnvironmentVariables().Keys.Cast<string>()
            .Where(k => k.StartsWith("MSBUILD", StringComparison.OrdinalIgnoreCase) || k.StartsWith("VSTEST", StringComparison.OrdinalIgnoreCase))
            .ToDictionary(k => k, _ => (string?)null);
        environment["MSBUILDDISABLENODEREUSE"] = "1";
        environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
        environment["DOTNET_NOLOGO"] = "1";
        environment["NUGET_PACKAGES"] = Path.Combine(_work.Path, "packages");
        var result = Repo.Run(Repo.Dotnet, args, workingDirectory, TimeSpan.FromMinutes(5), environment);
        output.WriteLine($"$ dotnet {string.Join(' ', args)} [{result.ExitCode}]");
        if (result.ExitCode != 0) output.WriteLine(result.Stdout + result.Stderr);
        return result;
    }

    /// <summary>Each name the snippets use and what the test runs them with. Every one must occur in a snippet, so an
    /// example renamed in a README fails here instead of running on nothing.</summary>
    private static List<(string Literal, string Replacement)> Substitutions(string instructBlip, string idefics, string itm, string scratch)
    {
        string flamingo = FixtureCase.Get("openflamingo").Path;
        static string Quoted(string path) => "\"" + path + "\"";
        return
        [
            ("\"Salesforce/blip2-opt-2.7b\"", Quoted(Repo.ShapesModel)),
            ("\"blip2-opt-2.7b\"", Quoted(Repo.ShapesModel)),
            // A saved quantized copy goes to a new folder for every run of the app.
            ("\"blip2-opt-2.7b-int8\"", $"System.IO.Path.Combine({Quoted(scratch)}, System.Guid.NewGuid().ToString(\"N\"))"),
            ("\"cat.jpg\"", Quoted(Repo.Scene1)),
            ("\"photo.jpg\"", Quoted(Repo.Scene1)),
            ("\"instructblip-vicuna-7b\"", Quoted(instructBlip)),
            ("\"blip2-itm-vit-g\"", Quoted(itm)),
            ("\"HuggingFaceM4/idefics-9b-instruct\"", Quoted(idefics)),
            ("\"ViT-L-14-openai.safetensors\"", Quoted(Path.Combine(flamingo, "vision_encoder.safetensors"))),
            ("\"RedPajama-INCITE-Base-3B-v1\"", Quoted(Path.Combine(flamingo, "lang_encoder"))),
            ("\"OpenFlamingo-4B-vitl-rpj3b/checkpoint.pt\"", Quoted(Path.Combine(flamingo, "checkpoint_trainable.pt"))),
            // The published dimensions and token ids become the fixture's (open_clip_config.json, config.json).
            ("EmbedDim = 768, QuickGelu = true, VisionCfg = new() { ImageSize = 224, Layers = 24, Width = 1024, PatchSize = 14 }",
                "EmbedDim = 16, QuickGelu = true, VisionCfg = new() { ImageSize = 30, Layers = 2, Width = 32, HeadWidth = 8, PatchSize = 5 }"),
            ("MediaTokenId = 50278, EocTokenId = 50277, PadTokenId = 50279", "MediaTokenId = 51, EocTokenId = 50, PadTokenId = 52"),
        ];
    }

    [Fact]
    public void A_fresh_app_outside_the_repository_captions_with_the_package_and_runs_the_readme_snippets()
    {
        string feed = Path.Combine(_work.Path, "feed");
        string app = Path.Combine(_work.Path, "ConsumerApp");
        Directory.CreateDirectory(app);
        Assert.False(app.StartsWith(Repo.Root, StringComparison.Ordinal), "the app must live outside the repository");

        var pack = Dotnet(Repo.Root, "pack", "src/Multimodal", "-c", "Release", "-o", feed, "-p:ContinuousIntegrationBuild=true");
        Assert.True(pack.ExitCode == 0, "dotnet pack failed");
        string version = typeof(Multimodal.Blip2.Blip2Captioner).Assembly
            .GetCustomAttributes(typeof(System.Reflection.AssemblyInformationalVersionAttribute), false)
            .Cast<System.Reflection.AssemblyInformationalVersionAttribute>().Single().InformationalVersion;
        string nupkg = Path.Combine(feed, $"{PackageId}.{version}.nupkg");
        Assert.True(File.Exists(nupkg), $"{nupkg} was not produced");
        Assert.True(File.Exists(Path.Combine(feed, $"{PackageId}.{version}.snupkg")), "no symbols package");
        using (var zip = System.IO.Compression.ZipFile.OpenRead(nupkg))
        {
            var entries = zip.Entries.Select(e => e.FullName).ToHashSet();
            foreach (var entry in new[] { "README.md", $"build/{PackageId}.targets", $"buildTransitive/{PackageId}.targets",
                         "lib/net8.0/Multimodal.dll", "lib/net10.0/Multimodal.dll", "lib/net10.0/Multimodal.xml" })
                Assert.Contains(entry, entries);
            using var nuspec = new StreamReader(zip.Entries.Single(e => e.FullName.EndsWith(".nuspec")).Open());
            string spec = nuspec.ReadToEnd();
            Assert.Contains("<repository type=\"git\" url=\"https://github.com/", spec);
            Assert.Contains("commit=\"", spec);                 // SourceLink's source revision
            using var readme = new StreamReader(zip.GetEntry("README.md")!.Open());
            Assert.DoesNotContain("](../", readme.ReadToEnd()); // no links that only work inside the repository
        }

        File.WriteAllText(Path.Combine(app, "nuget.config"), $"""
            <?xml version="1.0" encoding="utf-8"?>
            <configuration>
              <packageSources>
                <add key="local-feed" value="{feed}" />
              </packageSources>
              <fallbackPackageFolders>
                <add key="machine" value="{Packages}" />
              </fallbackPackageFolders>
            </configuration>
            """);
        File.WriteAllText(Path.Combine(app, "ConsumerApp.csproj"), $"""
            <Project Sdk="Microsoft.NET.Sdk">
              <PropertyGroup>
                <OutputType>Exe</OutputType>
                <TargetFramework>net10.0</TargetFramework>
                <ImplicitUsings>enable</ImplicitUsings>
                <Nullable>enable</Nullable>
              </PropertyGroup>
              <ItemGroup>
                <PackageReference Include="{PackageId}" Version="{version}" />
                <PackageReference Include="libtorch-cpu-linux-x64" Version="2.10.0" />
              </ItemGroup>
            </Project>
            """);
        File.WriteAllText(Path.Combine(app, "Program.cs"), """
            using Multimodal.Blip2;

            if (args[0] == "--snippets")
            {
                await Snippets.Run();
                return;
            }
            using var blip2 = Blip2Captioner.FromPretrained(args[0]);
            var caption = await blip2.CaptionAsync(args[1]);
            Console.WriteLine(caption.Text);
            Console.WriteLine(caption.FinishReason);
            """);
        using var instructBlip = InstructBlipFolder.Create();
        using var idefics = IdeficsFolder.Create();
        using var itm = Blip2.Blip2RetrieverTests.MakeFolder();
        var substitutions = Substitutions(instructBlip.Path, idefics.Path, itm.Path, Path.Combine(_work.Path, "saved"));
        var used = new HashSet<string>();
        var snippets = WriteSnippets(app, Path.Combine(Repo.Root, "README.md"), "Readme", substitutions, used)
            .Concat(WriteSnippets(app, Path.Combine(Repo.Root, "src", "Multimodal", "PACKAGE.md"), "PackageReadme", substitutions, used)).ToList();
        File.WriteAllText(Path.Combine(app, "Snippets.cs"), "internal static class Snippets\n{\n    public static async Task Run()\n    {\n"
            + string.Concat(snippets.Select(n => $"        Console.WriteLine();\n        Console.WriteLine(\"== {n}\");\n        await {n}.Run();\n")) + "    }\n}\n");
        output.WriteLine($"{snippets.Count} README snippets written into the app");
        Assert.True(snippets.Count >= 7, $"only {snippets.Count} C# snippets found in the READMEs");
        var unused = substitutions.Select(s => s.Literal).Where(l => !used.Contains(l)).ToList();
        Assert.True(unused.Count == 0, $"no snippet uses {string.Join(", ", unused)}");

        // The package's build step patches a copy of libLibTorchSharp.so; the package cache's copy must never be patched.
        Assert.True(Dotnet(app, "restore").ExitCode == 0, "dotnet restore failed");
        string cached = CachedNativeLibrary(app);
        string cachedHash = Convert.ToHexString(SHA256.HashData(File.ReadAllBytes(cached)));

        var build = Dotnet(app, "build", "-c", "Release");
        Assert.True(build.ExitCode == 0, "the consumer app does not build");
        if (OperatingSystem.IsLinux() && !NativeLoadTests.SystemLibStdCxxHas("GLIBCXX_3.4.32"))
            Assert.Contains("Marked GLIBCXX_3.4.32 weak", build.Stdout);
        var rebuild = Dotnet(app, "build", "-c", "Release");
        Assert.True(rebuild.ExitCode == 0);
        Assert.DoesNotContain("Marked GLIBCXX_3.4.32 weak", rebuild.Stdout);   // idempotent

        string expected = File.ReadAllLines(Path.Combine(Repo.Root, "samples", "images", "CAPTIONS.md"))
            .First(l => l.Contains("scene1.png")).Split('|')[2].Trim();
        string built = Path.Combine(app, "bin", "Release", "net10.0", "ConsumerApp.dll");
        AssertCaption(Repo.Run(Repo.Dotnet, [built, Repo.ShapesModel, Repo.Scene1], app, TimeSpan.FromMinutes(2)), expected);

        var run = Repo.Run(Repo.Dotnet, [built, "--snippets"], app, TimeSpan.FromMinutes(3));
        output.WriteLine(run.Stdout + run.Stderr);
        Assert.True(run.ExitCode == 0, $"the snippets failed (exit code {run.ExitCode}): {run.Stderr}");
        var ran = run.Stdout.Split('\n').Where(l => l.StartsWith("== ")).Select(l => l[3..].Trim()).ToList();
        Assert.Equal(snippets, ran);
        // README's first snippet and the package README's first print the caption of the image they were given first.
        var lines = run.Stdout.Split('\n').Select(l => l.Trim()).ToList();
        Assert.Equal(expected, lines[lines.IndexOf("== ReadmeSnippet1") + 1]);
        Assert.Equal(expected, lines[lines.IndexOf("== PackageReadmeSnippet1") + 1]);

        // Framework-dependent publish keeps runtimes/linux-x64/native/; a RID-specific publish puts the library flat.
        var publish = Dotnet(app, "publish", "-c", "Release", "-o", Path.Combine(_work.Path, "published"));
        Assert.True(publish.ExitCode == 0, "dotnet publish failed");
        AssertCaption(Repo.Run(Repo.Dotnet, [Path.Combine(_work.Path, "published", "ConsumerApp.dll"), Repo.ShapesModel, Repo.Scene1],
            app, TimeSpan.FromMinutes(2)), expected);
        var ridPublish = Dotnet(app, "publish", "-c", "Release", "-r", "linux-x64", "--self-contained", "false", "-o", Path.Combine(_work.Path, "published-rid"));
        Assert.True(ridPublish.ExitCode == 0, "RID-specific dotnet publish failed");
        Assert.True(File.Exists(Path.Combine(_work.Path, "published-rid", "libLibTorchSharp.so")));
        // The patched copy is proven by the run below, in its own process: loading it into this one could pull the
        // published libtorch in beside this process's own when TorchSharp has not loaded yet (two copies of libtorch
        // abort on registering their kernels twice).
        AssertCaption(Repo.Run(Path.Combine(_work.Path, "published-rid", "ConsumerApp"), [Repo.ShapesModel, Repo.Scene1],
            app, TimeSpan.FromMinutes(2)), expected);

        Assert.Equal(cachedHash, Convert.ToHexString(SHA256.HashData(File.ReadAllBytes(cached))));
    }

    /// <summary>TorchSharp's native library in the package folder restore chose for the app (from project.assets.json).</summary>
    private static string CachedNativeLibrary(string app)
    {
        using var assets = System.Text.Json.JsonDocument.Parse(File.ReadAllText(Path.Combine(app, "obj", "project.assets.json")));
        var folders = assets.RootElement.GetProperty("packageFolders").EnumerateObject().Select(p => p.Name).ToList();
        var found = folders.Select(f => Path.Combine(f, "torchsharp", "0.107.0", "runtimes", "linux-x64", "native", "libLibTorchSharp.so"))
            .FirstOrDefault(File.Exists);
        Assert.True(found is not null, $"TorchSharp 0.107.0's native library is in none of the restore's package folders: {string.Join(", ", folders)}");
        return found;
    }

    private void AssertCaption((int ExitCode, string Stdout, string Stderr) run, string expected)
    {
        output.WriteLine(run.Stdout + run.Stderr);
        Assert.True(run.ExitCode == 0, $"exit code {run.ExitCode}: {run.Stderr}");
        Assert.Equal([expected, "EndOfSequence"], run.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => l.Trim()));
    }

    /// <summary>Each ```csharp block becomes a class with its using directives on top and its statements, names
    /// substituted, in a method the app runs. Returns the class names in order.</summary>
    private static IEnumerable<string> WriteSnippets(string app, string markdown, string prefix,
        List<(string Literal, string Replacement)> substitutions, HashSet<string> used)
    {
        int n = 0;
        foreach (Match block in CSharpBlock().Matches(File.ReadAllText(markdown)))
        {
            string text = block.Groups[1].Value;
            foreach (var (literal, replacement) in substitutions)
                if (text.Contains(literal, StringComparison.Ordinal))
                {
                    text = text.Replace(literal, replacement, StringComparison.Ordinal);
                    used.Add(literal);
                }
            var lines = text.Split('\n');
            var usings = lines.TakeWhile(l => UsingDirective().IsMatch(l.Trim()) || l.Trim().Length == 0 || l.TrimStart().StartsWith("//")).ToList();
            var body = lines.Skip(usings.Count);
            var code = new StringBuilder();
            code.AppendLine($"// From {Path.GetFileName(markdown)}, C# block {n + 1}.");
            foreach (var u in usings.Where(l => UsingDirective().IsMatch(l.Trim()))) code.AppendLine(u.Trim());
            code.AppendLine($"internal static class {prefix}Snippet{n + 1}");
            code.AppendLine("{");
            code.AppendLine("    public static async Task Run()");
            code.AppendLine("    {");
            foreach (var line in body) code.AppendLine("        " + line);
            code.AppendLine("        await Task.CompletedTask;");
            code.AppendLine("    }");
            code.AppendLine("}");
            File.WriteAllText(Path.Combine(app, $"{prefix}Snippet{n + 1}.cs"), code.ToString());
            n++;
            yield return $"{prefix}Snippet{n}";
        }
    }
}
