using Multimodal.Processing;
using Multimodal.Tests.TestSupport;
using static TorchSharp.torch;

namespace Multimodal.Tests.Flamingo;

/// <summary>The interleaved prompt layouts against the inputs the fixtures' upstream processors built.</summary>
public sealed class PromptLayoutTests
{
    private static readonly DecodedImage Image = new(1, 1, "RGB", [0, 0, 0, 255]);

    [Fact]
    public void Idefics_layout_and_image_attention_mask_equal_the_processors()
    {
        var fixture = FixtureCase.Get("idefics");
        using var reference = fixture.OpenReference();
        using var inputIds = reference.Read("input_ids");
        using var imageMask = reference.Read("image_attention_mask");
        // The fixture's text pieces, as their (tiny-vocabulary) ids.
        var text = new Dictionary<string, long[]> { ["a"] = [76, 92, 24], ["b"] = [58, 25], ["c"] = [8, 36], ["d"] = [27, 66] };
        var prompts = new[]
        {
            InterleavedPrompt.Create().Image(Image).Text("a").Image(Image).Text("b"),
            InterleavedPrompt.Create().Text("c").Image(Image).Image(Image).Text("d"),
        };
        for (int row = 0; row < 2; row++)
        {
            var ids = IdeficsPromptLayout.Ids(prompts[row], t => text[t], bos: 1, fakeToken: 100, imageToken: 101);
            var expected = inputIds[row].data<long>().ToArray();
            var padded = Enumerable.Repeat(0L, expected.Length - ids.Length).Concat(ids).ToArray();   // left padding, pad 0
            Assert.Equal(expected, padded);
            var mask = IdeficsPromptLayout.ImageAttentionMask(padded, imageToken: 101, eosToken: 2, images: 2);
            var expectedMask = imageMask[row].data<long>().ToArray();
            Assert.Equal(expectedMask, Enumerable.Range(0, padded.Length).SelectMany(t => new[] { mask[t, 0], mask[t, 1] }));
        }
    }

    [Fact]
    public void OpenFlamingo_few_shot_text_follows_its_readme_format()
    {
        var prompt = InterleavedPrompt.FewShot([(Image, "An image of two cats."), (Image, "An image of a bathroom sink.")], Image, "An image of");
        Assert.Equal("<image>An image of two cats.<|endofchunk|><image>An image of a bathroom sink.<|endofchunk|><image>An image of",
            prompt.ToOpenFlamingoText());
        Assert.Equal(3, prompt.Images.Count);
    }
}
