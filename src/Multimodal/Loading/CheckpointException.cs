namespace Multimodal.Loading;

/// <summary>A checkpoint could not be read or mapped onto a model; the message names the file and
/// every offending tensor or key.</summary>
public class CheckpointException : Exception
{
    /// <summary>Creates the exception.</summary>
    public CheckpointException(string message, Exception? inner = null) : base(message, inner) { }

    /// <summary>Formats a list of problems as an indented block, at most <paramref name="limit"/> lines.</summary>
    internal static string Block(IReadOnlyCollection<string> lines, int limit = 40)
    {
        var shown = lines.Take(limit).Select(l => "    " + l);
        var more = lines.Count > limit ? new[] { $"    ... and {lines.Count - limit} more" } : [];
        return string.Join(Environment.NewLine, shown.Concat(more));
    }
}

/// <summary>A checkpoint file is malformed (bad header, offsets, dtype, truncation).</summary>
public sealed class CheckpointFormatException : CheckpointException
{
    /// <summary>The file at fault.</summary>
    public string FilePath { get; }

    /// <summary>The problems found, one per line.</summary>
    public IReadOnlyList<string> Problems { get; }

    /// <summary>Creates the exception for one problem.</summary>
    public CheckpointFormatException(string path, string problem) : this(path, [problem]) { }

    /// <summary>Creates the exception for several problems.</summary>
    public CheckpointFormatException(string path, IReadOnlyList<string> problems)
        : base($"'{path}' is not a valid checkpoint file ({problems.Count} problem{(problems.Count == 1 ? "" : "s")}):"
               + Environment.NewLine + Block(problems))
    {
        FilePath = path;
        Problems = problems;
    }
}

/// <summary>A checkpoint's tensors do not match the model: missing, unexpected, mis-shaped or
/// unreadable tensors, all listed in one message.</summary>
public sealed class CheckpointMismatchException : CheckpointException
{
    /// <summary>Model keys no tensor provides.</summary>
    public IReadOnlyList<string> Missing { get; }

    /// <summary>File tensors nothing consumes (not on the model's allowlist).</summary>
    public IReadOnlyList<string> Unexpected { get; }

    /// <summary>Keys whose file shape or dtype differs from the model's.</summary>
    public IReadOnlyList<string> Mismatched { get; }

    /// <summary>Creates the exception.</summary>
    public CheckpointMismatchException(string source, string modelName,
        IReadOnlyList<string> missing, IReadOnlyList<string> unexpected, IReadOnlyList<string> mismatched)
        : base(Format(source, modelName, missing, unexpected, mismatched))
    {
        Missing = missing;
        Unexpected = unexpected;
        Mismatched = mismatched;
    }

    private static string Format(string source, string modelName,
        IReadOnlyList<string> missing, IReadOnlyList<string> unexpected, IReadOnlyList<string> mismatched)
    {
        var parts = new List<string> { $"Checkpoint '{source}' does not match {modelName}:" };
        if (missing.Count > 0) parts.Add($"  missing ({missing.Count}):" + Environment.NewLine + Block(missing));
        if (unexpected.Count > 0) parts.Add($"  unexpected ({unexpected.Count}):" + Environment.NewLine + Block(unexpected));
        if (mismatched.Count > 0) parts.Add($"  wrong shape or dtype ({mismatched.Count}):" + Environment.NewLine + Block(mismatched));
        return string.Join(Environment.NewLine, parts);
    }
}
