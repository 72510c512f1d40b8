using System.Diagnostics;
using Microsoft.Extensions.AI;
using Multimodal.Blip2;
using Multimodal.Generation;
using Multimodal.Processing;
using Multimodal.Tests.TestSupport;
using Xunit.Abstractions;

namespace Multimodal.Tests.Generation;

/// <summary>What a first call meets: models/blip2-shapes has 64 positions and its generation_config.json asks for 50 new
/// tokens, more than a question leaves. A length left unset is cut to what fits (finish reason length there), as vLLM
/// fills max_tokens from max_model_len; only a length the caller set that cannot fit is refused, naming the option and
/// the largest value that fits. Texts too long for the positions are refused before they are tokenized.</summary>
[Collection(TimedCollection.Name)]
public sealed class PositionBudgetTests(PositionBudgetTests.Shapes shapes, ITestOutputHelper output) : IClassFixture<PositionBudgetTests.Shapes>
{
    public sealed class Shapes : IDisposable
    {
        public Blip2Captioner Captioner { get; } = Blip2Captioner.FromPretrained(Repo.ShapesModel);
        public DecodedImage Scene1 { get; } = ImageDecoder.Decode(Repo.Scene1);
        public void Dispose() => Captioner.Dispose();
    }

    private readonly Shapes _shapes = shapes;

    private Blip2Captioner Captioner => _shapes.Captioner;

    [Fact]
    public async Task A_question_with_no_length_set_is_answered_greedy_and_with_beams()
    {
        const string question = "what is on the left?";
        int budget = Captioner.MaxNewTokensFor(Blip2Captioner.QuestionPrompt(question))!.Value;
        Assert.True(budget < 50, $"the default 50 new tokens must exceed the {budget} this question leaves, or this test proves nothing");
        foreach (var options in new[] { new GenerationOptions(), new GenerationOptions { NumBeams = 3 } })
        {
            var answer = await Captioner.AskAsync(_shapes.Scene1, question, options);
            output.WriteLine($"beams {options.NumBeams}: \"{answer.Text}\" {answer.FinishReason}, {answer.OutputTokens} of {budget} tokens");
            Assert.InRange(answer.OutputTokens, 1, budget);
        }
        var reply = await Captioner.AsChatClient().GetResponseAsync([new ChatMessage(ChatRole.User,
            [new DataContent(File.ReadAllBytes(Repo.Scene1), "image/png"), new TextContent(question)])]);
        Assert.NotNull(reply.FinishReason);
    }

    [Fact]
    public async Task A_default_length_is_cut_to_the_positions_left_and_ends_with_finish_reason_length()
    {
        // A question that leaves exactly two positions: the answer is cut there.
        string question = "a";
        while (Captioner.MaxNewTokensFor(Blip2Captioner.QuestionPrompt(question + " a")) >= 2) question += " a";
        int budget = Captioner.MaxNewTokensFor(Blip2Captioner.QuestionPrompt(question))!.Value;
        var answer = await Captioner.AskAsync(_shapes.Scene1, question);
        output.WriteLine($"{budget} positions left: \"{answer.Text}\" {answer.FinishReason}, {answer.OutputTokens} tokens");
        Assert.InRange(budget, 2, 3);
        Assert.InRange(answer.OutputTokens, 1, budget);
        if (answer.OutputTokens == budget) Assert.Equal(FinishReason.Length, answer.FinishReason);
    }

    [Fact]
    public async Task A_length_the_caller_set_that_cannot_fit_is_refused_with_the_largest_that_fits()
    {
        const string question = "what is on the left?";
        int budget = Captioner.MaxNewTokensFor(Blip2Captioner.QuestionPrompt(question))!.Value;
        var e = await Assert.ThrowsAsync<GenerationLengthException>(() => Captioner.AskAsync(_shapes.Scene1, question, new GenerationOptions { MaxNewTokens = 256 }));
        output.WriteLine(e.Message);
        Assert.Equal(("MaxNewTokens", 256, budget), (e.Option, e.Requested, e.Largest));
        Assert.Equal("MaxNewTokens", e.ParamName);
        var fits = await Captioner.AskAsync(_shapes.Scene1, question, new GenerationOptions { MaxNewTokens = e.Largest });
        Assert.InRange(fits.OutputTokens, 1, budget);
        await Assert.ThrowsAsync<GenerationLengthException>(() => Captioner.AskAsync(_shapes.Scene1, question, new GenerationOptions { MaxNewTokens = budget + 1 }));
    }

    [Fact]
    public async Task A_text_longer_than_the_positions_hold_is_refused_before_tokenizing()
    {
        string huge = new('a', 4 << 20);
        var clock = Stopwatch.StartNew();
        long before = GC.GetTotalAllocatedBytes(precise: true);
        var e = await Assert.ThrowsAsync<ArgumentException>(() => Captioner.AskAsync(_shapes.Scene1, huge));
        long allocated = GC.GetTotalAllocatedBytes(precise: true) - before;   // the whole process: other tests' too, at worst
        output.WriteLine($"{clock.Elapsed.TotalMilliseconds:F1} ms, {allocated / 1e6:F1} MB allocated: {e.Message}");
        Assert.Contains("bytes of text", e.Message);
        Assert.True(clock.Elapsed < TimeSpan.FromMilliseconds(500), $"{clock.Elapsed.TotalMilliseconds:F0} ms");
        Assert.True(allocated < 50_000_000, $"{allocated} bytes allocated");   // the prompt string (8 MB) and little else
        long max = TextLimit.MaxBytes(Captioner.Processor.Positions, Captioner.Processor.Tokenizer);
        await Captioner.AskAsync(_shapes.Scene1, new string('a', 10), new GenerationOptions { MaxNewTokens = 1 });   // short texts pass
        Assert.Throws<ArgumentException>(() => TextLimit.Check(new string('a', (int)max + 1), Captioner.Processor.Positions, Captioner.Processor.Tokenizer));
        TextLimit.Check(new string('a', (int)max), Captioner.Processor.Positions, Captioner.Processor.Tokenizer);
    }
}
