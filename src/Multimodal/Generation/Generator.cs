namespace Multimodal.Generation;

/// <summary>Drives a language model token by token: greedy search, sampling or beam search, chosen by
/// <see cref="GenerationOptions"/>. Models only compute; all generation state (tokens, masks, the KV
/// cache) lives here, per call.</summary>
internal static class Generator
{
    /// <summary>Runs one generation under inference mode; returns the new tokens of every row.</summary>
    public static GenerationOutput Generate(GenerationRequest request)
    {
        if (request.Options.StopStrings.Count > 0 && request.Decode is null)
            throw new ArgumentException("StopStrings need a tokenizer to decode with.");
        if (request.MaxNewTokens <= 0)
            throw new ArgumentException($"No new tokens can be generated (limit {request.MaxNewTokens}).");
        using var inference = inference_mode();
        var output = request.Options.NumBeams > 1 ? BeamSearch.Run(request) : GreedySearch.Run(request);
        return output with { InputTokens = request.CountInputTokens() };
    }
}
