namespace Multimodal.Generation;

/// <summary>One generation as it goes from a façade through the model to the search: the options, resolved once against
/// the checkpoint's defaults and validated; a decoder for stop strings; the observer's hooks (each step's tokens, rows that
/// are separate requests and end on their own); and cancellation. Models take it whole instead of positional callbacks.</summary>
internal sealed record GenerationCall
{
    /// <summary>The options with the checkpoint's <c>generation_config.json</c> defaults applied, validated.</summary>
    public required GenerationOptions Options { get; init; }

    /// <summary>Decodes a row's new tokens to text (needed for stop strings), or null.</summary>
    public Func<IReadOnlyList<long>, string>? Decode { get; init; }

    /// <summary>Called after each step with the new token of every row (pad for ended rows) and which rows were open; or null.</summary>
    public Action<long[], bool[]>? OnTokens { get; init; }

    /// <summary>Rows that are independent requests (dynamic batching): a row whose token is cancelled ends with
    /// <see cref="FinishReason.Cancelled"/>, and greedy search drops ended rows from the running batch. Null: upstream's
    /// behaviour, ended rows run on with the pad id.</summary>
    public IReadOnlyList<CancellationToken>? RowCancel { get; init; }

    /// <summary>With <see cref="RowCancel"/>: called as soon as a row ends before the batch does, with that row alone (a
    /// one-row output, as the model's <c>generate()</c> returns it), so its request is answered at once.</summary>
    public Action<int, GenerationOutput>? OnRowEnded { get; init; }

    /// <summary>Checked before each step.</summary>
    public CancellationToken Cancel { get; init; }

    /// <summary>A call with <paramref name="options"/> (null: all defaults) resolved against <paramref name="defaults"/>.</summary>
    /// <exception cref="ArgumentException">an option is out of range.</exception>
    public static GenerationCall Resolve(GenerationOptions? options, GenerationConfig? defaults, CancellationToken cancellationToken = default)
    {
        var resolved = (options ?? new GenerationOptions()).WithDefaults(defaults);
        resolved.Validate();
        return new GenerationCall { Options = resolved, Cancel = cancellationToken };
    }

    /// <summary>The call whose early-ended rows reach <paramref name="onRowResult"/> as their callers' results (made by
    /// <paramref name="result"/> from the row's one-row output); itself when there is no one to answer.</summary>
    public GenerationCall AnsweringRows(Action<int, TextResult>? onRowResult, Func<int, GenerationOutput, TextResult> result) =>
        onRowResult is null ? this : this with { OnRowEnded = (row, alone) => onRowResult(row, result(row, alone)) };

    /// <summary>The call whose early-ended rows get <paramref name="prefix"/> in front, as the whole batch's rows do (BLIP-2
    /// puts BOS or the decoder start before the new tokens; Flamingo and IDEFICS the prompt).</summary>
    public GenerationCall Prefixing(Func<int, IEnumerable<long>> prefix) => OnRowEnded is not { } onRowEnded ? this : this with
    {
        OnRowEnded = (row, alone) => onRowEnded(row, alone with { Sequences = alone.Sequences.Select(ids => prefix(row).Concat(ids).ToArray()).ToArray() }),
    };
}
