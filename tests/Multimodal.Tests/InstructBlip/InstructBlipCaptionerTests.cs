using System.Text;
using Microsoft.Extensions.AI;
using Multimodal.Generation;
using Multimodal.InstructBlip;
using Multimodal.Processing;
using Multimodal.Tests.TestSupport;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace Multimodal.Tests.InstructBlip;

/// <summary>The InstructBLIP entry points over the oracle weights: the façade's answer is the model's generation for the
/// processor's inputs, the IChatClient (the user's question is the instruction) and streaming give the same text. The
/// oracle models have 100-token vocabularies, so the language side uses a character tokenizer inside them; the
/// Q-Former side a 100-word BERT vocabulary.</summary>
public sealed class InstructBlipCaptionerTests(ITestOutputHelper output)
{
    /// <summary>Characters as ids 3…96, BOS 2, pad 98 (the fixture's), EOS 2.</summary>
    private sealed class CharTokenizer : ITextTokenizer
    {
        public IReadOnlyList<long> Encode(string text, bool addSpecialTokens = true) =>
            [.. addSpecialTokens ? [2L] : Array.Empty<long>(), .. text.Select(c => 3L + c % 94)];

        public string Decode(IEnumerable<long> ids, bool skipSpecialTokens = true) =>
            string.Concat(ids.Where(i => !skipSpecialTokens || !SpecialIds.Contains(i)).Select(i => i is >= 3 and < 97 ? (char)(' ' + (i - 3 - ' ' % 94 + 94) % 94) : '?'));

        public IStreamingDecoder CreateStreamingDecoder(bool skipSpecialTokens = true) => new Streaming(this, skipSpecialTokens);

        public IReadOnlySet<long> SpecialIds { get; } = new HashSet<long> { 0, 1, 2, 98, 99 };

        public long? PadTokenId => 98;

        public int LongestTokenBytes => 1;

        private sealed class Streaming(CharTokenizer tokenizer, bool skip) : IStreamingDecoder
        {
            public string Push(long id) => tokenizer.Decode([id], skip);
            public string Flush() => "";
        }
    }

    private static InstructBlipCaptioner Captioner(TempDir vocab)
    {
        var model = InstructBlipForConditionalGeneration.FromPretrained(FixtureCase.Get("instructblip-vicuna").Path);
        var imageProcessor = BlipImageProcessor.FromFolder(vocab.Path);
        var processor = new InstructBlipProcessor(imageProcessor, new CharTokenizer(),
            BertWordPieceTokenizer.FromVocab(Path.Combine(vocab.Path, "vocab.txt")), model.Config);
        return new InstructBlipCaptioner(model, processor);
    }

    [Fact]
    public async Task The_facade_chat_client_and_stream_give_the_models_generation_for_the_processors_inputs()
    {
        using var vocab = Blip2.Blip2RetrieverTests.MakeFolder();                        // 100-word BERT vocab, 30-pixel images
        using var captioner = Captioner(vocab);
        var image = ImageDecoder.Decode(Repo.Scene1);
        const string question = "what is on the left?";
        var options = new GenerationOptions { MaxNewTokens = 6 };

        var answer = await captioner.AskAsync(image, question, options);
        using (var inputs = captioner.Processor.Process([image], [question]))
        using (var direct = captioner.Model.Generate(inputs.PixelValues, inputs.QformerInputIds, inputs.QformerAttentionMask, inputs.InputIds,
                   inputs.AttentionMask, options))
            Assert.Equal(direct.Sequences[0], answer.Ids);
        Assert.Equal(2, answer.Ids[0]);                                                     // the id generate() prepends for "LLaMAForCausalLM"
        output.WriteLine($"ids {string.Join(",", answer.Ids)} → \"{answer.Text}\" ({answer.FinishReason}, {answer.InputTokens} in, {answer.OutputTokens} out)");

        var chat = captioner.AsChatClient();
        var messages = new[] { new ChatMessage(ChatRole.User, [new DataContent(File.ReadAllBytes(Repo.Scene1), "image/png"), new TextContent(question)]) };
        var response = await chat.GetResponseAsync(messages, new ChatOptions { MaxOutputTokens = 6 });
        Assert.Equal(answer.Text, response.Text);
        var streamed = new StringBuilder();
        await foreach (var update in chat.GetStreamingResponseAsync(messages, new ChatOptions { MaxOutputTokens = 6 })) streamed.Append(update.Text);
        Assert.Equal(answer.Text, streamed.ToString().Trim());
    }
}
