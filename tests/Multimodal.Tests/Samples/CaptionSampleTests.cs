using Multimodal.Tests.TestSupport;
using Xunit.Abstractions;

namespace Multimodal.Tests.Samples;

/// <summary>The caption sample tried as a new user would: every mistake gets one line naming it, an exit code
/// (2 for a wrong command line, 1 for a wrong input) and no programmer's words.</summary>
public sealed class CaptionSampleTests(ITestOutputHelper output) : IDisposable
{
    private readonly TempDir _temp = new();

    public void Dispose() => _temp.Dispose();

    private (int ExitCode, string Stdout, string Stderr) Sample(params string[] args)
    {
        var result = Repo.Run(Repo.Dotnet, [Repo.CaptionSample, .. args], Repo.Root, TimeSpan.FromMinutes(2));
        output.WriteLine($"$ {string.Join(' ', args)}\n[{result.ExitCode}] {result.Stdout}{result.Stderr}");
        return result;
    }

    /// <summary>Runs the sample expecting exit code <paramref name="exitCode"/> and one error line containing <paramref name="expected"/>.</summary>
    private (int ExitCode, string Stdout, string Stderr) Refused(int exitCode, string expected, params string[] args)
    {
        var result = Sample(args);
        Assert.Equal(exitCode, result.ExitCode);
        OneLineError(result.Stderr, expected);
        return result;
    }

    private static void OneLineError(string stderr, string expected)
    {
        var lines = stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Single(lines);
        Assert.StartsWith("error: ", lines[0]);
        Assert.Contains(expected, lines[0]);
        foreach (var internalWord in new[] { "Unimplemented", "(Parameter '", "System.", "Exception", "   at " })
            Assert.DoesNotContain(internalWord, lines[0]);
    }

    [Fact]
    public void Mistakes_on_the_command_line_are_named_in_one_line()
    {
        Refused(2, "unknown option '--frobnicate'", "--frobnicate", "samples/images/scene1.png");

        var badNumber = Refused(2, "'three'", "--beams", "three", "samples/images/scene1.png");
        Assert.DoesNotContain("Usage:", badNumber.Stdout + badNumber.Stderr);

        Refused(2, "--max-new-tokens must be at least 1", "--max-new-tokens", "0", "samples/images/scene1.png");
    }

    [Fact]
    public void Bad_images_are_named_as_what_they_are()
    {
        Refused(1, "is a directory", "samples/images");

        string empty = Path.Combine(_temp.Path, "empty.png");
        File.WriteAllBytes(empty, []);
        Refused(1, "is empty", empty);

        string text = Path.Combine(_temp.Path, "notes.png");
        File.WriteAllText(text, "not an image");
        Refused(1, "not an image", text);

        Refused(1, "huggingface-cli download Salesforce/blip2-opt-2.7b", "--model", "Salesforce/blip2-opt-2.7b", "samples/images/scene1.png");
    }

    [Fact]
    public void Version_and_help_say_what_a_user_needs()
    {
        var version = Sample("--version");
        Assert.Equal(0, version.ExitCode);
        string packageVersion = typeof(Multimodal.Blip2.Blip2Captioner).Assembly
            .GetCustomAttributes(typeof(System.Reflection.AssemblyInformationalVersionAttribute), false)
            .Cast<System.Reflection.AssemblyInformationalVersionAttribute>().Single().InformationalVersion;
        Assert.Equal(packageVersion, version.Stdout.Trim());
        var package = System.Xml.Linq.XDocument.Load(Path.Combine(Repo.Root, "Directory.Build.props"));
        Assert.Equal(package.Descendants("Version").Single().Value, packageVersion);

        var help = Sample("--help");
        Assert.Equal(0, help.ExitCode);
        Assert.Contains("models/blip2-shapes", help.Stdout);
    }

    [Fact]
    public void Too_many_new_tokens_for_the_positions_are_clamped_with_a_warning_and_cut_text_is_flagged()
    {
        var beams = Sample("--model", "models/blip2-opt-tiny-random", "--beams", "3", "--max-new-tokens", "100", "samples/images/scene1.png");
        Assert.Equal(0, beams.ExitCode);
        Assert.Contains("warning: 100 new tokens do not fit", beams.Stderr);
        Assert.Contains("at most 56", beams.Stderr);

        var cut = Sample("--max-new-tokens", "3", "samples/images/scene1.png");
        Assert.Equal(0, cut.ExitCode);
        Assert.Equal("samples/images/scene1.png: a big red", cut.Stdout.Trim());
        Assert.Contains("warning: samples/images/scene1.png: the text stopped at the limit of 3 new tokens", cut.Stderr);
    }
}
