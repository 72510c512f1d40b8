using Multimodal.Generation;
using Multimodal.Processing;

namespace Multimodal.Chat;

/// <summary>The chat client of an <see cref="InterleavedPipeline"/>: each family says how a conversation
/// becomes its interleaved prompt; generating and streaming are the pipeline's.</summary>
public abstract class InterleavedChatClient : VisionChatClient
{
    private readonly InterleavedPipeline _pipeline;

    private protected InterleavedChatClient(InterleavedPipeline pipeline, string modelId) : base(modelId) => _pipeline = pipeline;

    /// <summary>The family's prompt for a conversation.</summary>
    private protected abstract InterleavedPrompt BuildPrompt(IReadOnlyList<ChatTurn> turns);

    private protected sealed override Task<TextResult> GenerateAsync(IReadOnlyList<ChatTurn> turns, GenerationOptions options, CancellationToken cancellationToken) =>
        _pipeline.GenerateAsync(BuildPrompt(turns), options, cancellationToken);

    private protected sealed override IAsyncEnumerable<TextChunk> StreamAsync(IReadOnlyList<ChatTurn> turns, GenerationOptions options, CancellationToken cancellationToken) =>
        _pipeline.StreamAsync(BuildPrompt(turns), options, cancellationToken);
}
