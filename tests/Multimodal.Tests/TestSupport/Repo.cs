using System.Diagnostics;

namespace Multimodal.Tests.TestSupport;

/// <summary>The repository around the test output: its root, the trained model, the sample's images, and
/// running a built program.</summary>
public static class Repo
{
    /// <summary>The folder holding Multimodal.sln.</summary>
    public static string Root { get; } = FindRoot();

    /// <summary>models/blip2-shapes, the project's trained default model.</summary>
    public static string ShapesModel => Path.Combine(Root, "models", "blip2-shapes");

    /// <summary>samples/images/scene1.png.</summary>
    public static string Scene1 => Path.Combine(Root, "samples", "images", "scene1.png");

    private static string FindRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "Multimodal.sln"))) return dir.FullName;
        throw new DirectoryNotFoundException("The repository root (Multimodal.sln) was not found above the test output.");
    }

    /// <summary>The dotnet that runs the tests (the SDK tells test hosts; PATH is the fallback).</summary>
    public static string Dotnet => Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") ?? "dotnet";

    /// <summary>The caption sample's built dll.</summary>
    public static string CaptionSample =>
        Directory.EnumerateFiles(Path.Combine(Root, "samples", "Multimodal.Caption", "bin"), "Multimodal.Caption.dll", SearchOption.AllDirectories)
            .Where(p => p.Contains("net10.0")).OrderByDescending(File.GetLastWriteTimeUtc).First();

    /// <summary>Runs a program to its end (or kills it after <paramref name="timeout"/>) and returns its exit code and output.</summary>
    public static (int ExitCode, string Stdout, string Stderr) Run(string program, IEnumerable<string> args, string workingDirectory,
        TimeSpan timeout, IDictionary<string, string?>? environment = null)
    {
        var start = new ProcessStartInfo(program, args)
        {
            WorkingDirectory = workingDirectory,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
        };
        if (environment is not null)
            foreach (var (key, value) in environment)
                if (value is null) start.Environment.Remove(key);
                else start.Environment[key] = value;
        using var process = Process.Start(start)!;
        process.StandardInput.Close();
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(timeout))
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"{program} {string.Join(' ', args)} did not finish in {timeout.TotalSeconds:F0} s; output so far: {stdout.Result}{stderr.Result}");
        }
        return (process.ExitCode, stdout.Result, stderr.Result);
    }
}

/// <summary>A made-up 50-symbol byte-level tokenizer.json (one symbol per id, '!' … 'R'), so OpenFlamingo's
/// three added tokens land on the fixture's ids 50–52.</summary>
public static class FlamingoTokenizer
{
    /// <summary>Writes tokenizer.json into a Flamingo fixture copy.</summary>
    public static void WriteFiftySymbols(string folder)
    {
        var vocab = Enumerable.Range(0, 50).ToDictionary(i => ((char)('!' + i)).ToString(), i => i);
        var tokenizerJson = new
        {
            added_tokens = Array.Empty<object>(),
            normalizer = (object?)null,
            model = new { type = "BPE", vocab, merges = Array.Empty<string>() },
        };
        File.WriteAllText(Path.Combine(folder, "tokenizer.json"), System.Text.Json.JsonSerializer.Serialize(tokenizerJson));
    }
}
