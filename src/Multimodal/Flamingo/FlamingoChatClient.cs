using Microsoft.Extensions.AI;
using Multimodal.Chat;
using Multimodal.Generation;
using Multimodal.Processing;

namespace Multimodal.Flamingo;

/// <summary><see cref="IChatClient"/> over a <see cref="FlamingoPipeline"/> (OpenFlamingo): earlier turns become
/// few-shot examples, the last user message the query, in OpenFlamingo's format — each earlier user message's
/// images and text followed by the assistant's reply and <c>&lt;|endofchunk|&gt;</c>, then the last user
/// message's images and text (e.g. "An image of"), which the model continues.</summary>
/// <remarks>Images go where the message puts them (<c>&lt;image&gt;</c>); system messages and instructions are
/// plain text at the start. The pipeline owns the model; disposing the client does nothing.</remarks>
public sealed class FlamingoChatClient : InterleavedChatClient
{

    /// <summary>Wraps a loaded pipeline (it stays owned by the caller).</summary>
    public FlamingoChatClient(FlamingoPipeline pipeline, string? modelId = null) : base(pipeline, modelId ?? "openflamingo") { }

    /// <summary>The interleaved few-shot prompt of a conversation.</summary>
    private protected override InterleavedPrompt BuildPrompt(IReadOnlyList<ChatTurn> turns) => Prompt(turns);

    /// <summary>The prompt of a conversation.</summary>
    internal static InterleavedPrompt Prompt(IReadOnlyList<ChatTurn> turns)
    {
        var prompt = InterleavedPrompt.Create();
        foreach (var turn in turns)
        {
            if (turn.Role == ChatRole.Assistant)
            {
                // The reply continues the example its user turn began: "An image of" + " two cats." + <|endofchunk|>.
                string text = turn.Text;
                bool needsSpace = text.Length > 0 && prompt.Parts.LastOrDefault() is TextPart { Text: var before } && before.Length > 0 && !char.IsWhiteSpace(before[^1]);
                prompt = prompt.Text((needsSpace ? " " : "") + text).EndOfChunk();
                continue;
            }
            foreach (var part in turn.Parts)
                prompt = part is ImagePart image ? prompt.Image(image.Image) : prompt.Text(((TextPart)part).Text);
        }
        return prompt;
    }
}
