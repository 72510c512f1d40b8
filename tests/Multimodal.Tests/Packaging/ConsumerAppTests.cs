using System.Security.Cryptography;
using System.Text;
using System.Text.RegularExpressions;
using Multimodal.Tests.TestSupport;
using Xunit.Abstractions;

namespace Multimodal.Tests.Packaging;

/// <summary>The package as a new user meets it: packed into a local feed, referenced with a CPU backend by a
/// fresh console app in a folder outside the repository (so none of this repository's build files reach it),
/// built, run and published. The app captions scene1.png with models/blip2-shapes and also compiles every C#
/// snippet of README.md and the package README.</summary>
public sealed partial class ConsumerAppTests(ITestOutputHelper output) : IDisposable
{
    private const string PackageId = "Multimodal.TorchSharp";
    private readonly TempDir _work = new();

    public void Dispose() => _work.Dispose();

    [GeneratedRegex("```csharp\\n(.*?)```", RegexOptions.Singleline)]
    private static partial Regex CSharpBlock();

    [GeneratedRegex(@"^using (static )?[A-Za-z_][\w.]*( = [\w.<>]+)?;$")]
    private static partial Regex UsingDirective();

    private string Packages => Environment.GetEnvironmentVariable("NUGET_PACKAGES")
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

    [Fact]
    public void A_fresh_app_outside_the_repository_captions_with_the_package_and_compiles_the_readme_snippets()
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

        // The NuGet cache copy must never be patched: remember it.
        string cached = Path.Combine(Packages, "torchsharp", "0.107.0", "runtimes", "linux-x64", "native", "libLibTorchSharp.so");
        string? cachedHash = File.Exists(cached) ? Convert.ToHexString(SHA256.HashData(File.ReadAllBytes(cached))) : null;

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

            using var blip2 = Blip2Captioner.FromPretrained(args[0]);
            var caption = await blip2.CaptionAsync(args[1]);
            Console.WriteLine(caption.Text);
            Console.WriteLine(caption.FinishReason);
            """);
        int snippets = WriteSnippets(app, Path.Combine(Repo.Root, "README.md"), "Readme")
                       + WriteSnippets(app, Path.Combine(Repo.Root, "src", "Multimodal", "PACKAGE.md"), "PackageReadme");
        output.WriteLine($"{snippets} README snippets compiled into the app");
        Assert.True(snippets >= 4, $"only {snippets} C# snippets found in the READMEs");

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

        if (cachedHash is not null)
            Assert.Equal(cachedHash, Convert.ToHexString(SHA256.HashData(File.ReadAllBytes(cached))));
    }

    private void AssertCaption((int ExitCode, string Stdout, string Stderr) run, string expected)
    {
        output.WriteLine(run.Stdout + run.Stderr);
        Assert.True(run.ExitCode == 0, $"exit code {run.ExitCode}: {run.Stderr}");
        Assert.Equal([expected, "EndOfSequence"], run.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => l.Trim()));
    }

    /// <summary>Each ```csharp block becomes a class with its using directives on top and its statements in a
    /// method that is compiled, not run.</summary>
    private static int WriteSnippets(string app, string markdown, string prefix)
    {
        int n = 0;
        foreach (Match block in CSharpBlock().Matches(File.ReadAllText(markdown)))
        {
            var lines = block.Groups[1].Value.Split('\n');
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
        }
        return n;
    }
}
