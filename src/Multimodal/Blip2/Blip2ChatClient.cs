using Microsoft.Extensions.AI;
using Multimodal.Chat;
using Multimodal.Generation;

namespace Multimodal.Blip2;

/// <summary><see cref="IChatClient"/> over a <see cref="Blip2Captioner"/> (OPT or Flan-T5): a user message with an
/// image and no text is captioned; with text it is a question, asked in BLIP-2's VQA format
/// ("Question: … Answer:"), earlier question/answer turns coming first as context
/// ("Question: q1 Answer: a1 Question: q2 Answer:"), as the BLIP-2 papers prompt multi-turn VQA.</summary>
/// <remarks>The conversation takes exactly one image (BLIP-2 reads one image per prompt); a second image
/// is refused. System messages and instructions are ignored: BLIP-2 has no system prompt. Streaming needs
/// greedy search or sampling. The captioner owns the model; disposing the client does nothing.</remarks>
public sealed class Blip2ChatClient : VisionChatClient
{
    private readonly Blip2Captioner _captioner;

    /// <summary>Wraps a loaded captioner.</summary>
    /// <param name="captioner">the captioner; it stays owned by the caller.</param>
    /// <param name="modelId">the name reported as the model id (default: the checkpoint's <c>_name_or_path</c> or "blip2").</param>
    public Blip2ChatClient(Blip2Captioner captioner, string? modelId = null)
        : base(modelId ?? NameOf(captioner)) => _captioner = captioner;

    private protected override long MaxImagePixels => _captioner.MaxImagePixels;

    private static string NameOf(Blip2Captioner captioner) =>
        captioner.Model.Config.NameOrPath is { Length: > 0 } name ? name : "blip2";

    private protected override Task<TextResult> GenerateAsync(IReadOnlyList<ChatTurn> turns, GenerationOptions options, CancellationToken cancellationToken)
    {
        var (image, prompt) = Prompt(turns);
        return _captioner.CaptionAsync(image, prompt, options, cancellationToken);
    }

    private protected override IAsyncEnumerable<TextChunk> StreamAsync(IReadOnlyList<ChatTurn> turns, GenerationOptions options, CancellationToken cancellationToken)
    {
        var (image, prompt) = Prompt(turns);
        return _captioner.StreamRawPromptAsync(image, prompt, options, cancellationToken);
    }

    /// <summary>The image and the prompt a conversation asks for.</summary>
    internal static (Processing.DecodedImage Image, string Prompt) Prompt(IReadOnlyList<ChatTurn> turns)
    {
        var image = SingleImage(turns, "BLIP-2");
        var dialogue = turns.Where(t => t.Role != ChatRole.System).ToList();
        string question = dialogue[^1].Text;
        if (question.Length == 0) return (image, "");
        var context = new List<string>();
        for (int i = 0; i + 1 < dialogue.Count; i++)
        {
            if (dialogue[i].Role != ChatRole.User || dialogue[i].Text.Length == 0) continue;
            string answer = dialogue[i + 1].Role == ChatRole.Assistant ? dialogue[i + 1].Text : "";
            context.Add($"{Blip2Captioner.QuestionPrompt(dialogue[i].Text)} {answer}".TrimEnd());
        }
        context.Add(Blip2Captioner.QuestionPrompt(question));
        return (image, string.Join(" ", context));
    }
}
