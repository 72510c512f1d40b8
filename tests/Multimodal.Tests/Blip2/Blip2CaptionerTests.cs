using System.Text;
using Multimodal.Blip2;
using Multimodal.Generation;
using Multimodal.Processing;
using Multimodal.Tests.TestSupport;
using TorchSharp;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace Multimodal.Tests.Blip2;

/// <summary>The captioning API end to end on a complete checkpoint folder: the blip2-opt fixture's
/// config and weights with the real BLIP-2 OPT tokenizer and a preprocessor config for its 30-pixel
/// images. The weights are random, so the text is arbitrary; what is checked is that every path
/// (decode → preprocess → model → generator → detokenize) agrees with the lower-level calls.</summary>
public sealed class Blip2CaptionerTests(ITestOutputHelper output) : IDisposable
{
    private static readonly string Images = Path.Combine(AppContext.BaseDirectory, "Images");
    private readonly TempDir _folder = MakeFolder("blip2-opt");

    public void Dispose() => _folder.Dispose();

    internal static TempDir MakeFolder(string fixture)
    {
        var folder = TempDir.CopyOf(Path.Combine(FixtureCase.BuiltInRoot, fixture));
        foreach (var file in Directory.EnumerateFiles(Path.Combine(AppContext.BaseDirectory, "Tokenizers", "opt")))
            File.Copy(file, Path.Combine(folder.Path, Path.GetFileName(file)));
        File.WriteAllText(Path.Combine(folder.Path, "preprocessor_config.json"), WidenedVocabulary.Preprocessor("blip2-opt-2.7b"));
        return folder;
    }

    [Fact]
    public async Task A_caption_equals_generate_on_the_processed_inputs()
    {
        using var blip2 = Blip2Captioner.FromPretrained(_folder.Path);
        var options = new GenerationOptions { MaxNewTokens = 8, MinNewTokens = 8, RepetitionPenalty = 2.0 };
        var caption = await blip2.CaptionAsync(Path.Combine(Images, "chelsea.png"), options: options);
        output.WriteLine($"caption ids {string.Join(" ", caption.Ids)} text \"{caption.Text}\"");

        var image = ImageDecoder.Decode(Path.Combine(Images, "chelsea.png"));
        using var inputs = blip2.Processor.Process([image], [""]);
        Assert.Equal([2L], inputs.InputIds.data<long>().ToArray()); // BOS only, as generate() without a prompt
        using var direct = blip2.Model.Generate(inputs.PixelValues, inputs.InputIds, inputs.AttentionMask, options);
        Assert.Equal(direct.Sequences[0], caption.Ids);
        Assert.Equal(blip2.Processor.Tokenizer.Decode(direct.Sequences[0]).Trim(), caption.Text);
    }

    [Fact]
    public async Task Streaming_yields_the_same_text_in_pieces()
    {
        using var blip2 = Blip2Captioner.FromPretrained(_folder.Path);
        var image = ImageDecoder.Decode(Path.Combine(Images, "coffee.png"));
        var options = new GenerationOptions { MaxNewTokens = 10, MinNewTokens = 10, RepetitionPenalty = 2.0 };
        var whole = await blip2.CaptionAsync(image, options: options);
        var pieces = new List<string>();
        await foreach (var piece in blip2.CaptionStreamAsync(image, options: options)) pieces.Add(piece);
        output.WriteLine($"{pieces.Count} pieces: {string.Join(" | ", pieces)}");
        Assert.True(pieces.Count > 1);
        Assert.Equal(whole.Text, string.Concat(pieces).Trim());
    }

    [Fact]
    public async Task Streaming_stops_when_cancelled()
    {
        using var blip2 = Blip2Captioner.FromPretrained(_folder.Path);
        var image = ImageDecoder.Decode(Path.Combine(Images, "coffee.png"));
        using var cts = new CancellationTokenSource();
        var options = new GenerationOptions { MaxNewTokens = 50, MinNewTokens = 50 };
        await Assert.ThrowsAnyAsync<OperationCanceledException>(async () =>
        {
            await foreach (var _ in blip2.CaptionStreamAsync(image, options: options, cancellationToken: cts.Token)) cts.Cancel();
        });
        // The instance is usable afterwards (the gate was released).
        var after = await blip2.CaptionAsync(image, options: new GenerationOptions { MaxNewTokens = 2, MinNewTokens = 2 });
        Assert.Equal(3, after.Ids.Count);
    }

    [Fact]
    public async Task A_batch_gives_each_image_its_own_caption()
    {
        using var blip2 = Blip2Captioner.FromPretrained(_folder.Path);
        var images = new[] { "chelsea.png", "rocket_q90.jpg", "palette.png" }.Select(f => ImageDecoder.Decode(Path.Combine(Images, f))).ToList();
        var options = new GenerationOptions { MaxNewTokens = 6, MinNewTokens = 6, RepetitionPenalty = 2.0 };
        var batch = await blip2.CaptionAsync(images, ["", "", ""], options);
        for (int i = 0; i < images.Count; i++)
        {
            var alone = await blip2.CaptionAsync(images[i], options: options);
            Assert.Equal(alone.Text, batch[i].Text);
        }
    }

    [Fact]
    public void The_image_token_layout_puts_padding_between_image_tokens_and_text()
    {
        using var folder = MakeFolder("blip2-opt-imgtok");
        var config = Blip2Config.Load(Path.Combine(folder.Path, "config.json"));
        var processor = Blip2Processor.FromFolder(folder.Path, config);
        var image = ImageDecoder.Decode(Path.Combine(Images, "tiny_7x5.png"));
        using var inputs = processor.Process([image, image], ["", "a photo of"]);
        var image8 = Enumerable.Repeat(99L, 8);
        Assert.Equal(image8.Concat([1L, 1, 1, 2]), inputs.InputIds[0].data<long>().ToArray());
        Assert.Equal(image8.Concat([2L, 102, 1345, 9]), inputs.InputIds[1].data<long>().ToArray());
        Assert.Equal(Enumerable.Repeat(1L, 8).Concat([0L, 0, 0, 1]), inputs.AttentionMask[0].data<long>().ToArray());
        Assert.Equal("Question: what is this? Answer:", Blip2Captioner.QuestionPrompt("what is this?"));
    }

    [Fact]
    public async Task Bad_input_gives_one_clear_exception()
    {
        using var blip2 = Blip2Captioner.FromPretrained(_folder.Path);
        string notImage = Path.Combine(_folder.Path, "config.json");
        var e = await Assert.ThrowsAsync<ImageDecodeException>(() => blip2.CaptionAsync(notImage));
        Assert.Contains("config.json", e.Message);
        // The tiny model has 100 token ids; a real prompt's ids lie outside it.
        var image = ImageDecoder.Decode(Path.Combine(Images, "tiny_7x5.png"));
        var vocab = await Assert.ThrowsAsync<ArgumentException>(() => blip2.AskAsync(image, "what is this?"));
        Assert.Contains("input_ids must lie in [0, 100)", vocab.Message);
        await Assert.ThrowsAsync<NotSupportedException>(async () =>
        {
            await foreach (var _ in blip2.CaptionStreamAsync(image, options: new GenerationOptions { NumBeams = 2 })) { }
        });
        File.Delete(Path.Combine(_folder.Path, "vocab.json"));
        Assert.Throws<FileNotFoundException>(() => Blip2Captioner.FromPretrained(_folder.Path));
    }
}
