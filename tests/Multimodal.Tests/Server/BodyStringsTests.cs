using System.Diagnostics.Tracing;
using System.Text;
using System.Text.Json;
using Multimodal.Server;
using Xunit.Abstractions;

namespace Multimodal.Tests.Server;

/// <summary>Large bodies are parsed without renting their length from the shared ArrayPool (which keeps such arrays per
/// thread after the request): long strings stay in the body and read back exactly, escapes included; a client's own
/// marker names nothing.</summary>
public sealed class BodyStringsTests(ITestOutputHelper output)
{
    private static string Body(string text, string image) =>
        JsonSerializer.Serialize(new
        {
            model = "m",
            messages = new object[]
            {
                new { role = "user", content = new object[] { new { type = "text", text }, new { type = "image_url", image_url = new { url = image } } } },
                new { role = "assistant", content = "00000000000000000000000000000000:0" },
            },
        });

    [Fact]
    public void A_large_body_keeps_its_long_strings_in_place_and_reads_them_back_exactly()
    {
        string text = string.Concat(Enumerable.Repeat("line \"one\"\n\ttwo é ✓ 𝄞 \\ ", 200_000));   // escapes of every kind
        var pixels = new byte[3 << 20];
        new Random(7).NextBytes(pixels);
        string image = "data:image/png;base64," + Convert.ToBase64String(pixels);
        byte[] body = Encoding.UTF8.GetBytes(Body(text, image));
        Assert.True(body.Length > BodyStrings.CompactFrom);

        long largestRent;
        (JsonElement Root, BodyStrings? Strings) parsed;
        using (var rents = new RentListener())
        {
            parsed = BodyStrings.Parse(body);
            largestRent = rents.LargestOnThisThread;
        }
        output.WriteLine($"{body.Length} byte body: largest ArrayPool rent on the parsing thread {largestRent} bytes");
        Assert.True(largestRent <= 1 << 20, $"the parse rented {largestRent} bytes");
        var strings = Assert.IsType<BodyStrings>(parsed.Strings);
        var parts = parsed.Root.GetProperty("messages")[0].GetProperty("content");
        Assert.Equal(text, strings.GetString(parts[0].GetProperty("text")));
        var url = parts[1].GetProperty("image_url").GetProperty("url");
        Assert.True(strings.TryGetRaw(url, out var raw));
        Assert.Contains("\\u002B", Encoding.UTF8.GetString(raw));   // System.Text.Json's writer escapes base64's '+'
        Assert.Equal(image, strings.GetString(url));
        // The client's own marker is an ordinary string, read as written.
        var forged = parsed.Root.GetProperty("messages")[1].GetProperty("content");
        Assert.False(strings.TryGetRaw(forged, out _));
        Assert.Equal("00000000000000000000000000000000:0", strings.GetString(forged));

        // The protocol reads both from the body: the text whole, the image's base64 decoded straight from its bytes.
        var request = OpenAiProtocol.ParseChat(parsed.Root, new ServerOptions(), long.MaxValue, strings);
        var contents = request.Messages[0].Contents;
        Assert.Equal(text, Assert.IsType<Microsoft.Extensions.AI.TextContent>(contents[0]).Text);
        Assert.Equal(pixels, Assert.IsType<Microsoft.Extensions.AI.DataContent>(contents[1]).Data.ToArray());
        Assert.Equal("image/png", ((Microsoft.Extensions.AI.DataContent)contents[1]).MediaType);

        var small = BodyStrings.Parse(Encoding.UTF8.GetBytes(Body("short", "data:,")));
        Assert.Null(small.Strings);
        Assert.ThrowsAny<JsonException>(() => BodyStrings.Parse(body.Concat("{}"u8.ToArray()).ToArray()));
        // Large without long strings: refused, not parsed at its length.
        var numbers = Encoding.UTF8.GetBytes("{\"model\":\"m\",\"input\":[" + string.Join(",", Enumerable.Repeat("1234567", 700_000)) + "]}");
        Assert.Contains("Only images and texts", Assert.ThrowsAny<JsonException>(() => BodyStrings.Parse(numbers)).Message);
    }

    /// <summary>The largest buffer the shared ArrayPool hands out on the listening thread (its event source).</summary>
    private sealed class RentListener : EventListener
    {
        private readonly int _thread = Environment.CurrentManagedThreadId;
        private long _largest;
        public long LargestOnThisThread => Interlocked.Read(ref _largest);

        protected override void OnEventSourceCreated(EventSource source)
        {
            if (source.Name == "System.Buffers.ArrayPoolEventSource") EnableEvents(source, EventLevel.Verbose);
        }

        protected override void OnEventWritten(EventWrittenEventArgs e)
        {
            if (e.EventName != "BufferRented" || Environment.CurrentManagedThreadId != _thread || e.Payload is null) return;
            int i = e.PayloadNames!.IndexOf("bufferSize");
            if (i >= 0 && e.Payload[i] is int size && size > _largest) Interlocked.Exchange(ref _largest, size);
        }
    }
}
