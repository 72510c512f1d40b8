using Microsoft.Extensions.AI;
using Multimodal.Chat;
using Multimodal.Generation;

namespace Multimodal.InstructBlip;

/// <summary><see cref="IChatClient"/> over an <see cref="InstructBlipCaptioner"/>: the user's last message is the
/// instruction (InstructBLIP was tuned on single-turn instructions; earlier turns and system messages are not part of
/// its prompt format and are ignored), about the one image the conversation holds.</summary>
public sealed class InstructBlipChatClient : VisionChatClient
{
    private readonly InstructBlipCaptioner _captioner;

    /// <summary>Wraps a loaded captioner (it stays owned by the caller).</summary>
    public InstructBlipChatClient(InstructBlipCaptioner captioner, string? modelId = null)
        : base(modelId ?? (captioner.Model.Config.NameOrPath is { Length: > 0 } name ? name : "instructblip")) => _captioner = captioner;

    private protected override long MaxImagePixels => _captioner.MaxImagePixels;

    private protected override Task<TextResult> GenerateAsync(IReadOnlyList<ChatTurn> turns, GenerationOptions options, CancellationToken cancellationToken)
    {
        var (image, instruction) = Instruction(turns);
        return _captioner.AskAsync(image, instruction, options, cancellationToken);
    }

    private protected override IAsyncEnumerable<TextChunk> StreamAsync(IReadOnlyList<ChatTurn> turns, GenerationOptions options, CancellationToken cancellationToken)
    {
        var (image, instruction) = Instruction(turns);
        return _captioner.StreamAsync(image, instruction, options, cancellationToken);
    }

    private static (Processing.DecodedImage Image, string Instruction) Instruction(IReadOnlyList<ChatTurn> turns) =>
        (SingleImage(turns, "InstructBLIP"), turns[^1].Text);
}
