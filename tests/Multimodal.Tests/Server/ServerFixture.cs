using Microsoft.AspNetCore.Mvc.Testing;
using Multimodal.Blip2;
using Multimodal.Tests.TestSupport;

namespace Multimodal.Tests.Server;

/// <summary>The server in process (WebApplicationFactory) with its default configuration, plus the caption the
/// library itself gives for scene1, which every answer must equal.</summary>
public sealed class ServerFixture : IAsyncLifetime
{
    public WebApplicationFactory<Program> Factory { get; } = new WebApplicationFactory<Program>()
        .WithWebHostBuilder(b => b.UseSetting("Multimodal:MaxQueue", "4"));

    public string Scene1Caption { get; private set; } = "";

    public static string Scene1DataUri => "data:image/png;base64," + Convert.ToBase64String(File.ReadAllBytes(Repo.Scene1));

    public async Task InitializeAsync()
    {
        using (var captioner = Blip2Captioner.FromPretrained(Repo.ShapesModel))
            Scene1Caption = (await captioner.CaptionAsync(Repo.Scene1)).Text;
        await WaitReady(Factory.CreateClient());
    }

    public static async Task WaitReady(HttpClient client)
    {
        for (int i = 0; i < 600; i++)
        {
            if ((await client.GetAsync("/readyz")).IsSuccessStatusCode) return;
            await Task.Delay(100);
        }
        throw new TimeoutException("the server did not become ready in 60 s");
    }

    public Task DisposeAsync()
    {
        Factory.Dispose();
        return Task.CompletedTask;
    }
}
