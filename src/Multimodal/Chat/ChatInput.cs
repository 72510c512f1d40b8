using System.Globalization;
using System.Text.Json;
using Microsoft.Extensions.AI;
using Multimodal.Generation;
using Multimodal.Processing;

namespace Multimodal.Chat;

/// <summary>Reads <see cref="ChatMessage"/>s and <see cref="ChatOptions"/> into what the models take; refuses
/// what they cannot take with a <see cref="NotSupportedException"/> that names it.</summary>
internal static class ChatInput
{
    /// <summary>Keys of <see cref="ChatOptions.AdditionalProperties"/> that are understood.</summary>
    public static readonly IReadOnlyList<string> AdditionalKeys = ["num_beams", "repetition_penalty", "length_penalty", "min_new_tokens"];

    /// <summary>The conversation as turns with decoded images; <see cref="ChatOptions.Instructions"/> becomes a
    /// leading system turn.</summary>
    public static IReadOnlyList<ChatTurn> Turns(IEnumerable<ChatMessage> messages, ChatOptions? options, long maxImagePixels = ImageDecoder.DefaultMaxPixels)
    {
        ArgumentNullException.ThrowIfNull(messages);
        var turns = new List<ChatTurn>();
        if (!string.IsNullOrWhiteSpace(options?.Instructions)) turns.Add(new ChatTurn(ChatRole.System, [new TextPart(options.Instructions)]));
        foreach (var message in messages)
        {
            if (message.Role != ChatRole.User && message.Role != ChatRole.Assistant && message.Role != ChatRole.System)
                throw new NotSupportedException($"Messages with role '{message.Role}' are not supported; use user, assistant or system (this model has no tools).");
            var parts = new List<PromptPart>();
            foreach (var content in message.Contents)
                parts.Add(content switch
                {
                    TextContent text => new TextPart(text.Text),
                    DataContent data => new ImagePart(Image(data)),
                    UriContent uri => new ImagePart(Image(uri)),
                    FunctionCallContent or FunctionResultContent => throw new NotSupportedException(
                        $"{content.GetType().Name} (tool calls) is not supported: this model has no tools."),
                    _ => throw new NotSupportedException($"{content.GetType().Name} is not supported; messages take text and images."),
                });
            turns.Add(new ChatTurn(message.Role, parts));
        }
        if (turns.LastOrDefault(t => t.Role != ChatRole.System) is not { } last || last.Role != ChatRole.User)
            throw new ArgumentException("The conversation must end with a user message.", nameof(messages));
        return turns;

        DecodedImage Image(AIContent content) => content switch
        {
            DataContent d when !d.HasTopLevelMediaType("image") =>
                throw new NotSupportedException($"DataContent with media type '{d.MediaType}' is not supported; only images (image/png, image/jpeg, image/webp, ...)."),
            DataContent d => ImageDecoder.Decode(d.Data.ToArray(), $"image ({d.MediaType})", maxImagePixels),
            UriContent { Uri: { IsFile: true } u } c => File(u, c.MediaType),
            UriContent { Uri: var u } => throw new NotSupportedException(
                $"Image URL '{u}' is not fetched: pass the image bytes as DataContent, or a local file: URI."),
            _ => throw new NotSupportedException($"{content.GetType().Name} is not supported."),
        };

        DecodedImage File(Uri uri, string? mediaType)
        {
            if (mediaType is not null && !mediaType.StartsWith("image/", StringComparison.OrdinalIgnoreCase))
                throw new NotSupportedException($"'{uri}' has media type '{mediaType}'; only images are supported.");
            return ImageDecoder.Decode(uri.LocalPath, maxImagePixels);
        }
    }

    /// <summary>The generation options a <see cref="ChatOptions"/> asks for.</summary>
    public static GenerationOptions Options(ChatOptions? chat)
    {
        var options = new GenerationOptions();
        if (chat is null) return options;
        if (chat.Tools is { Count: > 0 }) throw new NotSupportedException("ChatOptions.Tools is not supported: this model cannot call tools.");
        if (chat.ResponseFormat is ChatResponseFormatJson)
            throw new NotSupportedException("ChatOptions.ResponseFormat JSON is not supported: this model generates free text.");
        if (chat.FrequencyPenalty is not null || chat.PresencePenalty is not null)
            throw new NotSupportedException("ChatOptions.FrequencyPenalty/PresencePenalty are not supported; use AdditionalProperties[\"repetition_penalty\"].");
        if (chat.MaxOutputTokens is int max) options = options with { MaxNewTokens = max };
        bool sample = chat.Temperature is > 0 || (chat.Temperature is null && (chat.TopP is not null || chat.TopK is not null));
        if (sample)
        {
            options = options with { DoSample = true };
            if (chat.Temperature is float t) options = options with { Temperature = t };
            if (chat.TopP is float p) options = options with { TopP = p };
            if (chat.TopK is int k) options = options with { TopK = k };
        }
        else if (chat.Temperature is 0)
        {
            options = options with { DoSample = false };
        }
        if (chat.Seed is long seed) options = options with { Seed = unchecked((ulong)seed) };
        if (chat.StopSequences is { Count: > 0 } stops) options = options with { StopStrings = stops.ToArray() };
        if (chat.AdditionalProperties is { } extra)
            foreach (var (key, value) in extra)
                options = key switch
                {
                    "num_beams" => options with { NumBeams = (int)Number(key, value) },
                    "repetition_penalty" => options with { RepetitionPenalty = Number(key, value) },
                    "length_penalty" => options with { LengthPenalty = Number(key, value) },
                    "min_new_tokens" => options with { MinNewTokens = (int)Number(key, value) },
                    _ => throw new NotSupportedException(
                        $"ChatOptions.AdditionalProperties[\"{key}\"] is not supported; known: {string.Join(", ", AdditionalKeys)}."),
                };
        options.Validate();
        return options;
    }

    private static double Number(string key, object? value) => value switch
    {
        int i => i,
        long l => l,
        float f => f,
        double d => d,
        decimal m => (double)m,
        string s when double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out var parsed) => parsed,
        JsonElement { ValueKind: JsonValueKind.Number } e => e.GetDouble(),
        _ => throw new ArgumentException($"ChatOptions.AdditionalProperties[\"{key}\"] must be a number, not '{value}'."),
    };
}
