using Microsoft.Playwright;

namespace Multimodal.Tests.Playground;

/// <summary>Waits on the playground page. They poll with Playwright's own queries: the page's policy forbids eval, which
/// WaitForFunction would need.</summary>
internal static class PageWaits
{
    public const string Chromium = "/usr/bin/chromium";

    public static async Task Until(Func<Task<bool>> condition)
    {
        for (int i = 0; i < 600; i++)
        {
            if (await condition()) return;
            await Task.Delay(100);
        }
        throw new TimeoutException("the page did not reach the expected state in 60 s");
    }

    /// <summary>Waits for the answer's statistics, failing with the page's error message if one shows instead.</summary>
    public static async Task Finished(IPage page)
    {
        await Until(async () => (await page.TextContentAsync("#stats"))!.Contains("finish") || (await page.TextContentAsync("#error"))!.Length > 0);
        Xunit.Assert.Equal("", await page.TextContentAsync("#error"));
    }
}

/// <summary>The playground open in headless Chromium (Debian's, no sandbox), with the page's console collected.</summary>
internal sealed class BrowserPage : IAsyncDisposable
{
    private readonly IPlaywright _playwright;
    private readonly IBrowser _browser;

    private BrowserPage(IPlaywright playwright, IBrowser browser, IPage page)
    {
        _playwright = playwright;
        _browser = browser;
        Page = page;
        page.Console += (_, m) => Console.Add($"{m.Type}: {m.Text}");
    }

    public IPage Page { get; }

    /// <summary>Console messages as "type: text".</summary>
    public List<string> Console { get; } = [];

    public static async Task<BrowserPage> OpenAsync(Uri address)
    {
        var playwright = await Microsoft.Playwright.Playwright.CreateAsync();
        var browser = await playwright.Chromium.LaunchAsync(new() { ExecutablePath = PageWaits.Chromium, Headless = true, Args = ["--no-sandbox"] });
        var page = await browser.NewPageAsync(new() { ViewportSize = new() { Width = 1100, Height = 1300 } });
        var opened = new BrowserPage(playwright, browser, page);
        await page.GotoAsync(address.ToString());
        return opened;
    }

    public async ValueTask DisposeAsync()
    {
        await _browser.DisposeAsync();
        _playwright.Dispose();
    }
}
