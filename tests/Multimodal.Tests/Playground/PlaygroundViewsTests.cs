using System.Globalization;
using Deque.AxeCore.Playwright;
using Microsoft.Extensions.AI;
using Microsoft.Playwright;
using Multimodal.Blip2;
using Multimodal.Flamingo;
using Multimodal.Tests.Server;
using Multimodal.Tests.TestSupport;
using Xunit.Abstractions;
using static Multimodal.Tests.Playground.PageWaits;

namespace Multimodal.Tests.Playground;

/// <summary>A server with one model of each kind: the captioning model, a retrieval model (the blip2-itm oracle with a
/// vocabulary) and an interleaved one (OpenFlamingo over LLaMA with the real tokenizer); it requires an API key.</summary>
public sealed class MixedModelsServer : KestrelServer
{
    public const string ApiKey = "views-key";

    public TempDir Retrieval { get; } = Blip2.Blip2RetrieverTests.MakeFolder();
    public TempDir Interleaved { get; } = FlamingoLlamaFolder.Create();

    public override Task InitializeAsync()
    {
        ExtraArguments.AddRange([
            "--Multimodal:Models:0:Name", "blip2-shapes", "--Multimodal:Models:0:Path", Repo.ShapesModel,
            "--Multimodal:Models:1:Name", "blip2-itm", "--Multimodal:Models:1:Path", Retrieval.Path,
            "--Multimodal:Models:2:Name", "openflamingo-llama", "--Multimodal:Models:2:Path", Interleaved.Path,
            "--Multimodal:ApiKeys:0", ApiKey,
        ]);
        return base.InitializeAsync();
    }

    public override async Task DisposeAsync()
    {
        await base.DisposeAsync();
        Retrieval.Dispose();
        Interleaved.Dispose();
    }
}

/// <summary>The playground's views for the other kinds of model, in Debian's Chromium: captions ranked by a retrieval
/// model in the order and with the similarities the library computes; an interleaved prompt (image, text, image, text)
/// answered with the text the library's chat client gives for the same parts; a question answered with the library's
/// answer; the API key field; the model list's kinds; an accessibility scan of each view.</summary>
public sealed class PlaygroundViewsTests(MixedModelsServer server, ITestOutputHelper output) : IClassFixture<MixedModelsServer>
{
    private static readonly string Scene2 = Path.Combine(Repo.Root, "samples", "images", "scene2.png");

    private async Task NoSeriousViolations(IPage page, string view)
    {
        var scan = await page.RunAxe();
        foreach (var v in scan.Violations) output.WriteLine($"axe ({view}) {v.Impact}: {v.Id} — {v.Help}");
        Assert.DoesNotContain(scan.Violations, v => v.Impact is "serious" or "critical");
    }

    private static ChatOptions Greedy(int tokens) => new() { MaxOutputTokens = tokens, Temperature = 0, TopP = 1 };

    [SkippableFact]
    public async Task Each_kind_of_model_gets_its_view_and_the_answers_the_library_gives()
    {
        Skip.IfNot(File.Exists(Chromium), "Debian's chromium is not installed (.ci/run installs it)");
        await using var browser = await BrowserPage.OpenAsync(server.BaseUri);
        var (page, console) = (browser.Page, browser.Console);
        // The server wants a key: its 401 shows, and the key field brings the models.
        await Until(async () => (await page.TextContentAsync("#error"))!.Length > 0);
        output.WriteLine($"without the key: \"{await page.TextContentAsync("#error")}\"");
        Assert.StartsWith("401:", await page.TextContentAsync("#error"));
        await page.FillAsync("#api-key", MixedModelsServer.ApiKey);
        await page.Keyboard.PressAsync("Tab");                               // the field's change event
        await Until(async () => await page.Locator("#model option").CountAsync() == 3);
        Assert.Equal("", await page.TextContentAsync("#error"));
        await page.FillAsync("#max-tokens", "8");

        // A question to the captioning model: the library's own answer.
        await page.SetInputFilesAsync("#file", Repo.Scene1);
        await page.WaitForSelectorAsync("#preview:not([hidden])");
        await page.FillAsync("#question", "what is on the left");
        await page.ClickAsync("#ask");
        await Finished(page);
        string answer = (await page.TextContentAsync("#answer"))!;
        string expectedAnswer;
        using (var captioner = Blip2Captioner.FromPretrained(Repo.ShapesModel))
            expectedAnswer = (await captioner.AsChatClient().GetResponseAsync(
                new ChatMessage(ChatRole.User, [new DataContent(File.ReadAllBytes(Repo.Scene1), "image/png"), new TextContent("what is on the left")]),
                Greedy(8))).Text;
        output.WriteLine($"answer \"{answer}\" (library \"{expectedAnswer}\")");
        Assert.Equal(expectedAnswer, answer);

        // The retrieval model: its view, and the captions in the library's order with its similarities.
        await page.SelectOptionAsync("#model", "blip2-itm");
        Assert.True(await page.IsVisibleAsync("#retrieval-view"));
        Assert.False(await page.IsVisibleAsync("#chat-view"));
        // Words of the test vocabulary (others would all be [UNK], and tie).
        string[] captions = ["a cat on the sofa", "a dog in the snow", "a red car", "the cat in the car"];
        await page.FillAsync("#captions", string.Join("\n", captions));
        await page.ClickAsync("#rank");
        await Until(async () => await page.Locator("#ranking li").CountAsync() == captions.Length || (await page.TextContentAsync("#error"))!.Length > 0);
        Assert.Equal("", await page.TextContentAsync("#error"));
        var ranked = await page.Locator("#ranking .ranked-caption").AllTextContentsAsync();
        var scores = (await page.Locator("#ranking .score").AllTextContentsAsync())
            .Select(s => double.Parse(s.Trim().Split(' ')[^1], CultureInfo.InvariantCulture)).ToList();
        using (var retriever = Blip2Retriever.FromPretrained(server.Retrieval.Path))
        {
            var generator = retriever.AsEmbeddingGenerator();
            var image = (await ((IEmbeddingGenerator<DataContent, Embedding<float>>)generator).GenerateAsync(
                [new DataContent(File.ReadAllBytes(Repo.Scene1), "image/png")]))[0].Vector;
            var texts = await ((IEmbeddingGenerator<string, Embedding<float>>)generator).GenerateAsync(captions);
            var expected = captions.Select((c, i) => (Caption: c, Score: (double)Blip2EmbeddingGenerator.Similarity(image.Span, texts[i].Vector.Span)))
                .OrderByDescending(p => p.Score).ToList();
            for (int i = 0; i < expected.Count; i++)
                output.WriteLine($"{i + 1}. page \"{ranked[i]}\" {scores[i]:F4}; library \"{expected[i].Caption}\" {expected[i].Score:F6}");
            // Distinct scores, so the order is the model's and not a tie's.
            Assert.All(expected.Zip(expected.Skip(1)), p => Assert.True(p.First.Score - p.Second.Score > 1e-4, "two captions score alike"));
            Assert.Equal(expected.Select(p => p.Caption), ranked);
            for (int i = 0; i < expected.Count; i++) Assert.True(Math.Abs(scores[i] - expected[i].Score) <= 5e-5 + 1e-6, $"score {i}: {scores[i]} vs {expected[i].Score}");
        }
        await NoSeriousViolations(page, "retrieval");

        // The interleaved model: image, text, image, text in order; the library's chat client's text for the same parts.
        await page.SelectOptionAsync("#model", "openflamingo-llama");
        Assert.True(await page.IsVisibleAsync("#interleaved-view"));
        Assert.False(await page.IsVisibleAsync("#image-section"));
        Assert.Equal(2, await page.Locator("#parts li").CountAsync());        // the chosen image and an empty text
        await page.FillAsync("#parts li:nth-child(2) textarea", "An image of");
        await page.SetInputFilesAsync("#part-file", Scene2);
        await Until(async () => await page.Locator("#parts li[data-type=image]").CountAsync() == 2);
        await page.ClickAsync("#add-text");
        await page.Keyboard.TypeAsync("and");                                 // the new text part has the focus
        await Until(async () => (await page.Locator("#parts li[data-type=image]").Nth(1).GetAttributeAsync("data-url"))?.Length > 0);
        await page.ClickAsync("#generate");
        await Finished(page);
        string continuation = (await page.TextContentAsync("#answer"))!;
        string expectedContinuation;
        using (var flamingo = FlamingoPipeline.FromPretrained(server.Interleaved.Path))
            expectedContinuation = (await flamingo.AsChatClient().GetResponseAsync(new ChatMessage(ChatRole.User,
            [
                new DataContent(File.ReadAllBytes(Repo.Scene1), "image/png"), new TextContent("An image of"),
                new DataContent(File.ReadAllBytes(Scene2), "image/png"), new TextContent("and"),
            ]), Greedy(8))).Text;
        output.WriteLine($"interleaved \"{continuation}\" (library \"{expectedContinuation}\"); {await page.TextContentAsync("#stats")}");
        Assert.Equal(expectedContinuation, continuation);
        Assert.Contains("finish:", await page.TextContentAsync("#stats"));
        await NoSeriousViolations(page, "interleaved");

        // A part removed by keyboard: Tab to its Remove button, Enter.
        await page.FocusAsync("#parts li:nth-child(4) textarea");
        await page.Keyboard.PressAsync("Tab");
        await page.Keyboard.PressAsync("Enter");
        Assert.Equal(3, await page.Locator("#parts li").CountAsync());

        await page.SetViewportSizeAsync(320, 800);
        Assert.True(await page.EvaluateAsync<bool>("document.documentElement.scrollWidth <= 320"), "the interleaved view scrolls sideways at 320 px");
        foreach (var line in console) output.WriteLine(line);
        // No script error; the one failed load is the 401 before the key was typed.
        Assert.DoesNotContain(console, l => l.StartsWith("error", StringComparison.Ordinal) && !l.Contains("status of 401", StringComparison.Ordinal));
    }

    [Fact]
    public async Task The_model_list_says_which_endpoint_each_model_answers_and_whether_it_interleaves()
    {
        using var client = new HttpClient { BaseAddress = server.BaseUri };
        client.DefaultRequestHeaders.Authorization = new("Bearer", MixedModelsServer.ApiKey);
        var models = System.Text.Json.Nodes.JsonNode.Parse(await client.GetStringAsync("/v1/models"))!["data"]!.AsArray()
            .ToDictionary(m => (string)m!["id"]!, m => ((string)m!["task"]!, (bool)m["interleaved"]!));
        Assert.Equal(("chat", false), models["blip2-shapes"]);
        Assert.Equal(("embeddings", false), models["blip2-itm"]);
        Assert.Equal(("chat", true), models["openflamingo-llama"]);
    }
}
