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
