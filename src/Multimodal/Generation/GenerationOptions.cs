namespace Multimodal.Generation;

/// <summary>When beam search stops (transformers' <c>early_stopping</c>).</summary>
public enum BeamEarlyStopping
{
    /// <summary><c>early_stopping=False</c> (default): stop a row when no open beam can beat the worst
    /// finished hypothesis at the current length.</summary>
    Heuristic,

    /// <summary><c>early_stopping=True</c>: stop a row as soon as it has <c>NumBeams</c> finished hypotheses.</summary>
    Immediate,

    /// <summary><c>early_stopping="never"</c>: stop only when no better hypothesis is possible at all.</summary>
    Never,
}

/// <summary>How text is generated; defaults are transformers v4.45.1's <c>GenerationConfig</c> defaults
/// except where noted. Greedy search unless <see cref="DoSample"/> or <see cref="NumBeams"/> &gt; 1.</summary>
public sealed record GenerationOptions
{
    /// <summary>Most new tokens to generate (not counting the BOS BLIP-2 prepends). When neither this nor
    /// <see cref="MaxLength"/> is set, 20 new tokens (upstream's <c>max_length=20</c> counts differently
    /// for BLIP-2: see <see cref="MaxLength"/>). Wins over <see cref="MaxLength"/> when both are set.</summary>
    public int? MaxNewTokens { get; init; }

    /// <summary>Upstream's <c>max_length</c> as BLIP-2's <c>generate</c> interprets it: in the original
    /// layout it adds <c>num_query_tokens − 1</c>, then transformers subtracts the prompt-embedding
    /// length, leaving <c>max_length − 1 − prompt tokens</c> new tokens.</summary>
    public int? MaxLength { get; init; }

    /// <summary>Upstream's <c>min_length</c>, adjusted like <see cref="MaxLength"/> (in the original
    /// layout BLIP-2 adds <c>num_query_tokens</c>, then the prompt-embedding length is subtracted):
    /// EOS is forbidden until that many new tokens exist. 0 (default) means no minimum.</summary>
    public int MinLength { get => _minLength ?? 0; init => _minLength = value; }
    private int? _minLength;

    /// <summary>EOS is forbidden until this many new tokens exist (<c>min_new_tokens</c>).</summary>
    public int MinNewTokens { get => _minNewTokens ?? 0; init => _minNewTokens = value; }
    private int? _minNewTokens;

    /// <summary>Sample from the distribution instead of taking the most likely token.</summary>
    public bool DoSample { get => _doSample ?? false; init => _doSample = value; }
    private bool? _doSample;

    /// <summary>Beams for beam search; 1 = no beam search.</summary>
    public int NumBeams { get => _numBeams ?? 1; init => _numBeams = value; }
    private int? _numBeams;

    /// <summary>Beam score = sum of log-probs / length^LengthPenalty.</summary>
    public double LengthPenalty { get => _lengthPenalty ?? 1.0; init => _lengthPenalty = value; }
    private double? _lengthPenalty;

    /// <summary>When beam search stops.</summary>
    public BeamEarlyStopping EarlyStopping { get => _earlyStopping ?? BeamEarlyStopping.Heuristic; init => _earlyStopping = value; }
    private BeamEarlyStopping? _earlyStopping;

    /// <summary>Sampling temperature (only with <see cref="DoSample"/>).</summary>
    public double Temperature { get => _temperature ?? 1.0; init => _temperature = value; }
    private double? _temperature;

    /// <summary>Keep only the k most likely tokens when sampling; 0 disables.</summary>
    public int TopK { get => _topK ?? 50; init => _topK = value; }
    private int? _topK;

    /// <summary>Keep the smallest set of tokens whose probability reaches p when sampling; 1 disables.</summary>
    public double TopP { get => _topP ?? 1.0; init => _topP = value; }
    private double? _topP;

    /// <summary>Seed of the sampler; the same seed, prompt and options give the same text. Null: random.</summary>
    public ulong? Seed { get; init; }

    /// <summary>Divides positive (multiplies negative) scores of tokens already generated; 1 disables.</summary>
    public double RepetitionPenalty { get => _repetitionPenalty ?? 1.0; init => _repetitionPenalty = value; }
    private double? _repetitionPenalty;

    /// <summary>Tokens that end a sequence; null uses the model's <c>eos_token_id</c>.</summary>
    public IReadOnlyList<long>? EosTokenIds { get; init; }

    /// <summary>Token written after a sequence has ended; null uses the model's <c>pad_token_id</c>.</summary>
    public long? PadTokenId { get; init; }

    /// <summary>A sequence also ends when its decoded text contains one of these (the text keeps it, as upstream's <c>stop_strings</c>).</summary>
    public IReadOnlyList<string> StopStrings { get; init; } = [];

    /// <summary>Reuse keys and values of earlier positions (default). Off recomputes the whole sequence
    /// at every step; only useful to measure what the cache saves.</summary>
    public bool UseCache { get; init; } = true;

    /// <summary>Keep each step's processed scores (B, steps, V) in the output.</summary>
    public bool OutputScores { get; init; }

    /// <summary>These options with every option the caller left unset taken from a checkpoint's
    /// <c>generation_config.json</c>, as transformers' <c>generate(**kwargs)</c> overrides
    /// <c>model.generation_config</c> key by key. The length limit is taken as a whole: a caller who sets
    /// <see cref="MaxNewTokens"/> or <see cref="MaxLength"/> gets exactly that limit.</summary>
    public GenerationOptions WithDefaults(GenerationConfig? defaults)
    {
        if (defaults is null) return this;
        bool callerLimit = (MaxNewTokens is not null || MaxLength is not null) && !LengthFromDefaults;
        return this with
        {
            LengthFromDefaults = !callerLimit,
            MaxNewTokens = callerLimit ? MaxNewTokens : defaults.MaxNewTokens,
            MaxLength = callerLimit ? MaxLength : defaults.MaxLength,
            _minLength = _minLength ?? defaults.MinLength,
            _minNewTokens = _minNewTokens ?? defaults.MinNewTokens,
            _doSample = _doSample ?? defaults.DoSample,
            _numBeams = _numBeams ?? defaults.NumBeams,
            _lengthPenalty = _lengthPenalty ?? defaults.LengthPenalty,
            _earlyStopping = _earlyStopping ?? defaults.EarlyStopping,
            _temperature = _temperature ?? defaults.Temperature,
            _topK = _topK ?? defaults.TopK,
            _topP = _topP ?? defaults.TopP,
            _repetitionPenalty = _repetitionPenalty ?? defaults.RepetitionPenalty,
            EosTokenIds = EosTokenIds ?? defaults.EosTokenIds,
            PadTokenId = PadTokenId ?? defaults.PadTokenId,
        };
    }

    /// <summary>The new-token limits, as transformers turns <c>max_length</c> / <c>min_length</c> into them:
    /// <see cref="MaxNewTokens"/> wins; otherwise <see cref="MaxLength"/> (default 20) minus the positions it
    /// counts besides new tokens; the minimum likewise from <see cref="MinLength"/>, never below
    /// <see cref="MinNewTokens"/>. Each model says what its lengths count (the prompt, BLIP-2's queries, T5's
    /// start token).</summary>
    /// <param name="maxLengthCounts">positions <c>max_length</c> counts besides new tokens.</param>
    /// <param name="minLengthCounts">positions <c>min_length</c> counts besides new tokens.</param>
    /// <param name="defaultMaxNewTokens">new tokens when neither limit is set; null: 20 − <paramref name="maxLengthCounts"/>.</param>
    /// <param name="budget">the most new tokens the model's positions leave room for after this prompt; null: no limit.
    /// A limit the caller set that exceeds it is refused; a default limit is cut to it (the text then ends with
    /// finish reason length), as vLLM fills <c>max_tokens</c> from <c>max_model_len</c>.</param>
    /// <exception cref="ArgumentException">the length limit leaves no room for a new token.</exception>
    /// <exception cref="GenerationLengthException">the caller's limit does not fit the positions left.</exception>
    internal (int MaxNew, int MinNew) ResolveLimits(int maxLengthCounts, int minLengthCounts, int? defaultMaxNewTokens = null, int? budget = null)
    {
        int maxNew = MaxNewTokens ?? (MaxLength is int length ? length - maxLengthCounts : defaultMaxNewTokens ?? 20 - maxLengthCounts);
        bool explicitLimit = (MaxNewTokens is not null || MaxLength is not null) && !LengthFromDefaults;
        if (budget is int room && maxNew > room)
        {
            if (room < 1)
                throw new ArgumentException($"The prompt takes every position this model has ({maxLengthCounts} counted); shorten it to leave room for an answer.");
            if (explicitLimit)
                throw MaxNewTokens is not null
                    ? new GenerationLengthException(nameof(MaxNewTokens), MaxNewTokens.Value, room)
                    : new GenerationLengthException(nameof(MaxLength), MaxLength!.Value, room + maxLengthCounts);
            maxNew = room;
        }
        if (maxNew <= 0)
            throw new ArgumentException($"MaxLength {MaxLength ?? 20} leaves no room for new tokens after the {maxLengthCounts} positions it counts; set MaxNewTokens instead.");
        return (maxNew, Math.Max(MinNewTokens, Math.Max(MinLength - minLengthCounts, 0)));
    }

    /// <summary>Set when <see cref="MaxNewTokens"/> / <see cref="MaxLength"/> came from a checkpoint's defaults rather
    /// than from the caller, so a limit the positions cannot hold is cut instead of refused.</summary>
    internal bool LengthFromDefaults { get; init; }

    /// <summary>Checks the options, naming the first wrong one.</summary>
    /// <exception cref="ArgumentException">an option is out of range or options conflict.</exception>
    public void Validate()
    {
        ValidateRanges();
        Require(!(DoSample && NumBeams > 1), "Beam sampling (DoSample with NumBeams > 1) is not supported; use one or the other.");
        // transformers checks stop strings per beam against the running text; our beam search does not
        // decode beams, so the combination is refused rather than silently ignored.
        Require(StopStrings.Count == 0 || NumBeams == 1, "StopStrings work with greedy search and sampling, not with beam search (NumBeams > 1).");
    }

    private static void Require(bool ok, string message)
    {
        if (!ok) throw new ArgumentException(message);
    }

    /// <summary>Each option within its range (combinations are checked by <see cref="Validate"/>, when options are used).</summary>
    internal void ValidateRanges()
    {
        Require(MaxNewTokens is null or > 0, $"MaxNewTokens must be positive (got {MaxNewTokens}).");
        Require(MaxLength is null or > 0, $"MaxLength must be positive (got {MaxLength}).");
        Require(MinLength >= 0 && MinNewTokens >= 0, "MinLength and MinNewTokens must not be negative.");
        Require(NumBeams >= 1, $"NumBeams must be at least 1 (got {NumBeams}).");
        Require(Temperature > 0 && double.IsFinite(Temperature), $"Temperature must be a positive number (got {Temperature}).");
        Require(TopK >= 0, $"TopK must not be negative (got {TopK}).");
        Require(TopP > 0 && TopP <= 1, $"TopP must be in (0, 1] (got {TopP}).");
        Require(RepetitionPenalty > 0 && double.IsFinite(RepetitionPenalty), $"RepetitionPenalty must be a positive number (got {RepetitionPenalty}).");
        Require(double.IsFinite(LengthPenalty), $"LengthPenalty must be finite (got {LengthPenalty}).");
        Require(EosTokenIds is null || EosTokenIds.Count > 0, "EosTokenIds, when given, must not be empty.");
        Require(StopStrings.All(s => !string.IsNullOrEmpty(s)), "StopStrings must not contain empty strings.");
    }
}

/// <summary>A length limit the caller set (<see cref="GenerationOptions.MaxNewTokens"/> or
/// <see cref="GenerationOptions.MaxLength"/>) needs more positions than the model has left after the prompt. A limit
/// left unset is never refused: the model's default is cut to what fits.</summary>
public sealed class GenerationLengthException(string option, int requested, int largest)
    : ArgumentException($"{option} = {requested} does not fit: this model's positions leave room for {option} = {largest} at most after this prompt.", option)
{
    /// <summary>The option at fault: "MaxNewTokens" or "MaxLength".</summary>
    public string Option { get; } = option;

    /// <summary>The value the caller asked for.</summary>
    public int Requested { get; } = requested;

    /// <summary>The largest value of <see cref="Option"/> that fits.</summary>
    public int Largest { get; } = largest;
}
