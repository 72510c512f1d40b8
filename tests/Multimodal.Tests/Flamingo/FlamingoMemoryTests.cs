using Multimodal.Flamingo;
using Multimodal.Idefics;
using Multimodal.Generation;
using Multimodal.Tests.TestSupport;
using TorchSharp;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace Multimodal.Tests.Flamingo;

/// <summary>Flamingo sessions own their media tensors and free them: repeated generation leaves no live tensor.</summary>
public sealed class FlamingoMemoryTests(ITestOutputHelper output)
{
    [Fact]
    public void Repeated_flamingo_and_idefics_generations_leave_the_live_tensor_count_unchanged()
    {
        using var flamingo = FlamingoModel.FromPretrained(FixtureCase.Get("openflamingo").Path);
        using var idefics = IdeficsForVisionText2Text.FromPretrained(FixtureCase.Get("idefics").Path);
        using var fr = FixtureCase.Get("openflamingo").OpenReference();
        using var ir = FixtureCase.Get("idefics").OpenReference();
        using var visionX = fr.Read("vision_x");
        using var langX = fr.Read("lang_x");
        using var mask = fr.Read("attention_mask");
        using var ids = ir.Read("input_ids");
        using var imask = ir.Read("attention_mask");
        using var pixels = ir.Read("pixel_values");
        using var rows = ir.Read("image_attention_mask");
        void Once(int i)
        {
            var options = new GenerationOptions { MaxNewTokens = 4, NumBeams = i % 2 == 0 ? 1 : 2 };
            using (flamingo.Generate(visionX, langX, mask, options)) { }
            using (idefics.Generate(ids, imask, pixels, rows, options)) { }
            using (flamingo.Forward(visionX, langX, mask)) { }
        }
        Once(0);
        Once(1);
        long before = DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        for (int i = 0; i < 20; i++) Once(i);
        long after = DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        output.WriteLine($"live tensors before {before}, after 20 rounds {after}");
        Assert.Equal(before, after);
    }
}
