using Microsoft.Extensions.AI;
using Multimodal.Chat;
using Multimodal.Generation;
using Multimodal.Processing;

namespace Multimodal.Idefics;

/// <summary><see cref="IChatClient"/> over an <see cref="IdeficsPipeline"/>, in the IDEFICS-instruct dialogue
/// format: <c>User:</c> with the message's text and images interleaved where the message puts them, each turn
/// closed by <c>&lt;end_of_utterance&gt;</c>, <c>\nAssistant: …</c> for earlier replies, and a final
/// <c>\nAssistant:</c> that the model continues.</summary>
/// <remarks>System messages and instructions are plain text at the start, as IDEFICS' own examples put a
/// preamble. The pipeline owns the model; disposing the client does nothing.</remarks>
public sealed class IdeficsChatClient : InterleavedChatClient
{
    private const string EndOfUtterance = "<end_of_utterance>";

    /// <summary>Wraps a loaded pipeline (it stays owned by the caller).</summary>
    public IdeficsChatClient(IdeficsPipeline pipeline, string? modelId = null)
        
        : base(pipeline, modelId ?? (pipeline.Model.Config.NameOrPath is { Length: > 0 } name ? name : "idefics")) { }

    /// <summary>The interleaved dialogue prompt of a conversation.</summary>
    private protected override InterleavedPrompt BuildPrompt(IReadOnlyList<ChatTurn> turns) => Prompt(turns);

    /// <summary>The prompt of a conversation.</summary>
    internal static InterleavedPrompt Prompt(IReadOnlyList<ChatTurn> turns)
    {
        var prompt = InterleavedPrompt.Create();
        bool first = true;
        foreach (var turn in turns)
        {
            string lead = first ? "" : "\n";
            if (turn.Role == ChatRole.System)
            {
                prompt = prompt.Text(lead + turn.Text);
            }
            else if (turn.Role == ChatRole.Assistant)
            {
                prompt = prompt.Text($"{lead}Assistant: {turn.Text}{EndOfUtterance}");
            }
            else
            {
                prompt = prompt.Text(lead + "User:");
                bool start = true;
                foreach (var part in turn.Parts)
                {
                    prompt = part is ImagePart image ? prompt.Image(image.Image)
                        : prompt.Text((start ? " " : "") + ((TextPart)part).Text);
                    start = false;
                }
                prompt = prompt.Text(EndOfUtterance);
            }
            first = false;
        }
        return prompt.Text("\nAssistant:");
    }
}
