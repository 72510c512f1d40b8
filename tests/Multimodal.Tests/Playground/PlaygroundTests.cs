using System.Net;
using Deque.AxeCore.Playwright;
using Microsoft.Playwright;
using Multimodal.Tests.Server;
using Multimodal.Tests.TestSupport;
using Xunit.Abstractions;
using static Multimodal.Tests.Playground.PageWaits;

namespace Multimodal.Tests.Playground;

/// <summary>The playground page the server serves at / (wwwroot): its headers, and the page itself driven in Debian's
/// Chromium through Playwright — caption, ask, a setting taking effect, the server's error for a file that is not an
/// image, the keyboard-only path, and an accessibility scan.</summary>
public sealed class PlaygroundTests(KestrelServer server, ITestOutputHelper output) : IClassFixture<KestrelServer>
{

    [Fact]
    public async Task The_page_is_static_files_with_a_policy_that_allows_no_inline_script_and_no_other_origin()
    {
        using var client = new HttpClient { BaseAddress = server.BaseUri };
        var page = await client.GetAsync("/");
        Assert.Equal(HttpStatusCode.OK, page.StatusCode);
        Assert.Equal("text/html", page.Content.Headers.ContentType!.MediaType);
        string policy = string.Join(";", page.Headers.GetValues("Content-Security-Policy"));
        output.WriteLine(policy);
        Assert.Contains("script-src 'self'", policy);
        Assert.Contains("default-src 'none'", policy);
        Assert.DoesNotContain("unsafe-inline", policy);
        Assert.Equal("nosniff", page.Headers.GetValues("X-Content-Type-Options").Single());
        string html = await page.Content.ReadAsStringAsync();
        Assert.DoesNotContain("<script>", html);                                  // no inline script to allow
        Assert.Contains("text/javascript", (await client.GetAsync("/app.js")).Content.Headers.ContentType!.ToString());
        Assert.Equal("text/css", (await client.GetAsync("/app.css")).Content.Headers.ContentType!.MediaType);
        Assert.Equal(HttpStatusCode.NotFound, (await client.GetAsync("/wwwroot/")).StatusCode);       // no directory listing
        Assert.Equal(HttpStatusCode.NotFound, (await client.GetAsync("/../appsettings.json")).StatusCode);
        // CORS stays off: a cross-origin preflight gets no allowance.
        var preflight = new HttpRequestMessage(HttpMethod.Options, "/v1/chat/completions");
        preflight.Headers.Add("Origin", "http://example.com");
        preflight.Headers.Add("Access-Control-Request-Method", "POST");
        Assert.False((await client.SendAsync(preflight)).Headers.Contains("Access-Control-Allow-Origin"));
    }

    [Fact]
    public async Task With_an_api_key_required_the_page_loads_and_its_api_requests_need_the_key()
    {
        using var factory = new Microsoft.AspNetCore.Mvc.Testing.WebApplicationFactory<Program>().WithWebHostBuilder(b => b
            .UseSetting("Multimodal:ApiKeys:0", "page-key"));
        var client = factory.CreateClient();
        Assert.Equal(HttpStatusCode.OK, (await client.GetAsync("/")).StatusCode);              // the page holds nothing secret
        Assert.Equal(HttpStatusCode.Unauthorized, (await client.GetAsync("/v1/models")).StatusCode);
        var withKey = new HttpRequestMessage(HttpMethod.Get, "/v1/models");
        withKey.Headers.Authorization = new("Bearer", "page-key");                              // what the page's key field sends
        Assert.Equal(HttpStatusCode.OK, (await client.SendAsync(withKey)).StatusCode);
    }



    [SkippableFact]
    public async Task In_a_browser_it_captions_asks_applies_settings_shows_errors_works_by_keyboard_and_passes_an_accessibility_scan()
    {
        Skip.IfNot(File.Exists(Chromium), "Debian's chromium is not installed (.ci/run installs it)");
        await using var browser = await BrowserPage.OpenAsync(server.BaseUri);
        var (page, console) = (browser.Page, browser.Console);
        await Until(async () => await page.Locator("#model option").CountAsync() > 0);

        // Caption: the exact caption of models/blip2-shapes streams in, then the statistics.
        await page.SetInputFilesAsync("#file", Repo.Scene1);
        await page.WaitForSelectorAsync("#preview:not([hidden])");
        output.WriteLine(await page.TextContentAsync("#image-size"));
        await page.ClickAsync("#caption");
        await Finished(page);
        string caption = (await page.TextContentAsync("#answer"))!.Trim();
        output.WriteLine($"caption \"{caption}\"; {await page.TextContentAsync("#stats")}");
        Assert.Equal(server.Scene1Caption, caption);
        Assert.Contains("first token after", await page.TextContentAsync("#stats"));

        // A setting takes effect: 3 new tokens, cut by length.
        await page.FillAsync("#max-tokens", "3");
        await page.ClickAsync("#caption");
        await Finished(page);
        string stats = (await page.TextContentAsync("#stats"))!;
        output.WriteLine(stats);
        Assert.Contains("finish: length", stats);
        Assert.Contains("3 new tokens", stats);
        // The shapes model has 64 positions: queries, the question and 10 new tokens fit.
        await page.FillAsync("#max-tokens", "10");

        // Keyboard only: type the question, Enter asks.
        await page.FocusAsync("#question");
        await page.Keyboard.TypeAsync("what is on the left");
        await page.Keyboard.PressAsync("Enter");
        await Finished(page);
        output.WriteLine($"answer \"{await page.TextContentAsync("#answer")}\"");
        Assert.NotEqual("", (await page.TextContentAsync("#answer"))!.Trim());
        // The Caption button is the next stop after the question, and Enter presses it.
        await page.FocusAsync("#question");
        await page.Keyboard.PressAsync("Tab");
        Assert.Equal("caption", await page.EvaluateAsync<string>("document.activeElement.id"));

        // A file that is not an image: the server's own message, not a blank.
        string notes = Path.Combine(Path.GetTempPath(), $"notes-{Guid.NewGuid():N}.png");
        await File.WriteAllTextAsync(notes, "not an image at all");
        try
        {
            await page.SetInputFilesAsync("#file", notes);
            await page.ClickAsync("#caption");
            await Until(async () => (await page.TextContentAsync("#error"))!.Length > 0);
            string error = (await page.TextContentAsync("#error"))!;
            output.WriteLine($"error \"{error}\"");
            Assert.StartsWith("400:", error);
        }
        finally
        {
            File.Delete(notes);
        }

        // Accessibility: no serious or critical violation.
        var scan = await page.RunAxe();
        var serious = scan.Violations.Where(v => v.Impact is "serious" or "critical").ToList();
        foreach (var v in scan.Violations) output.WriteLine($"axe {v.Impact}: {v.Id} — {v.Help}");
        Assert.Empty(serious);

        // Readable at 320 px: nothing wider than the viewport.
        await page.SetViewportSizeAsync(320, 800);
        Assert.True(await page.EvaluateAsync<bool>("document.documentElement.scrollWidth <= 320"), "the page scrolls sideways at 320 px");
        await page.SetViewportSizeAsync(1100, 1300);
        await page.SetInputFilesAsync("#file", Repo.Scene1);
        await page.ClickAsync("#caption");
        await Finished(page);
        string shot = Path.Combine(AppContext.BaseDirectory, "playground.png");
        await page.ScreenshotAsync(new() { Path = shot, FullPage = true });
        output.WriteLine($"screenshot {shot}");
        foreach (var line in console) output.WriteLine(line);
        // No script error and no policy violation; the one failed load is the 400 the non-image file was answered with.
        Assert.DoesNotContain(console, l => l.StartsWith("error", StringComparison.Ordinal) && !l.Contains("status of 400", StringComparison.Ordinal));
    }
}
