using System.Runtime.CompilerServices;
using Microsoft.Extensions.AI;
using Multimodal.Generation;
using Multimodal.Processing;

namespace Multimodal.Chat;

/// <summary>One turn of a conversation with its images decoded, in the order the message holds its parts.</summary>
/// <param name="Role">user, assistant or system.</param>
/// <param name="Parts">text and images, in order.</param>
internal sealed record ChatTurn(ChatRole Role, IReadOnlyList<PromptPart> Parts)
{
    /// <summary>The turn's text parts joined, trimmed.</summary>
    public string Text => string.Concat(Parts.OfType<TextPart>().Select(p => p.Text)).Trim();

    /// <summary>The turn's images.</summary>
    public IEnumerable<DecodedImage> Images => Parts.OfType<ImagePart>().Select(p => p.Image);
}

/// <summary>The <see cref="IChatClient"/> of a vision-language façade: messages → the family's prompt,
/// <see cref="ChatOptions"/> → <see cref="GenerationOptions"/>, the result → a <see cref="ChatResponse"/> with
/// its finish reason and token usage. Each family says how a conversation becomes its prompt.</summary>
/// <remarks>
/// Images come as <see cref="DataContent"/> (bytes and an image media type) or as <see cref="UriContent"/> /
/// <see cref="DataContent"/> with a local <c>file:</c> URI; remote URLs are never fetched. Options map as:
/// <c>MaxOutputTokens</c> → <see cref="GenerationOptions.MaxNewTokens"/>; <c>Temperature</c> &gt; 0, <c>TopP</c> or
/// <c>TopK</c> → sampling with those values (temperature 0 → greedy); <c>Seed</c>; <c>StopSequences</c> →
/// <see cref="GenerationOptions.StopStrings"/> (the text keeps the stop string, as transformers does);
/// <c>AdditionalProperties</c> <c>num_beams</c>, <c>repetition_penalty</c>, <c>length_penalty</c>,
/// <c>min_new_tokens</c>. Tools, response formats and frequency/presence penalties are refused.
/// Usage counts the language model's input positions (image queries or image tokens and prompt tokens)
/// and the generated tokens. Calls are serialized by the underlying façade.
/// </remarks>
public abstract class VisionChatClient : IChatClient
{
    private readonly ChatClientMetadata _metadata;

    /// <summary>Creates the client for a model named <paramref name="modelId"/>.</summary>
    private protected VisionChatClient(string modelId) => _metadata = new ChatClientMetadata("multimodal", null, modelId);

    /// <summary>Upper bound on the pixels of an image in a message (decompression bombs are refused).</summary>
    private protected virtual long MaxImagePixels => ImageDecoder.DefaultMaxPixels;

    /// <summary>The one image a conversation holds, for families that read exactly one (BLIP-2, InstructBLIP).</summary>
    /// <param name="turns">the conversation.</param>
    /// <param name="family">the family's name, for the message.</param>
    /// <exception cref="ArgumentException">the conversation holds no image.</exception>
    /// <exception cref="NotSupportedException">it holds more than one.</exception>
    private protected static DecodedImage SingleImage(IReadOnlyList<ChatTurn> turns, string family)
    {
        var images = turns.SelectMany(t => t.Images).ToList();
        if (images.Count == 0) throw new ArgumentException($"The conversation holds no image; {family} answers about one image.");
        if (images.Count > 1)
            throw new NotSupportedException($"A second image (the conversation holds {images.Count}): {family} reads one image per conversation.");
        return images[0];
    }

    /// <summary>Turns the conversation into the family's prompt and generates (not streamed).</summary>
    private protected abstract Task<TextResult> GenerateAsync(IReadOnlyList<ChatTurn> turns, GenerationOptions options, CancellationToken cancellationToken);

    /// <summary>Turns the conversation into the family's prompt and streams.</summary>
    private protected abstract IAsyncEnumerable<TextChunk> StreamAsync(IReadOnlyList<ChatTurn> turns, GenerationOptions options, CancellationToken cancellationToken);

    /// <inheritdoc/>
    public async Task<ChatResponse> GetResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null,
        CancellationToken cancellationToken = default)
    {
        var turns = ChatInput.Turns(messages, options, MaxImagePixels);
        var result = await GenerateAsync(turns, ChatInput.Options(options), cancellationToken).ConfigureAwait(false);
        return new ChatResponse(new ChatMessage(ChatRole.Assistant, result.Text))
        {
            FinishReason = result.FinishReason.ToChatFinishReason(),
            Usage = UsageOf(result),
            ModelId = _metadata.DefaultModelId,
            CreatedAt = DateTimeOffset.UtcNow,
            ResponseId = Guid.NewGuid().ToString("N"),
        };
    }

    /// <inheritdoc/>
    public async IAsyncEnumerable<ChatResponseUpdate> GetStreamingResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        var turns = ChatInput.Turns(messages, options, MaxImagePixels);
        string id = Guid.NewGuid().ToString("N");
        bool first = true;
        await foreach (var chunk in StreamAsync(turns, ChatInput.Options(options), cancellationToken).ConfigureAwait(false))
        {
            // The façade's text is trimmed at the start; so is the stream.
            string text = first ? chunk.Text.TrimStart() : chunk.Text;
            if (text.Length > 0) first = false;
            if (chunk.Result is { } result)
            {
                yield return new ChatResponseUpdate(ChatRole.Assistant, [new UsageContent(UsageOf(result))])
                {
                    FinishReason = result.FinishReason.ToChatFinishReason(), ModelId = _metadata.DefaultModelId, ResponseId = id,
                };
            }
            else if (text.Length > 0)
            {
                yield return new ChatResponseUpdate(ChatRole.Assistant, text) { ModelId = _metadata.DefaultModelId, ResponseId = id };
            }
        }
    }

    /// <inheritdoc/>
    public object? GetService(Type serviceType, object? serviceKey = null) =>
        serviceKey is not null ? null
        : serviceType == typeof(ChatClientMetadata) ? _metadata
        : serviceType.IsInstanceOfType(this) ? this
        : null;

    /// <summary>Does nothing: the façade the client was made from owns the model.</summary>
    public void Dispose() => GC.SuppressFinalize(this);

    private static UsageDetails UsageOf(TextResult result) => new()
    {
        InputTokenCount = result.InputTokens,
        OutputTokenCount = result.OutputTokens,
        TotalTokenCount = result.InputTokens + result.OutputTokens,
    };
}
