using Multimodal.Blip2;
using Multimodal.Flamingo;
using Multimodal.Idefics;
using Multimodal.Generation;
using Multimodal.Tests.TestSupport;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace Multimodal.Tests.Generation;

/// <summary>TorchSharp wraps temporaries (the implicit Scalars of <c>a + b</c>, tensors of intermediate steps)
/// in finalizable objects; training once hit "Unknown scalar type" when such a temporary was finalized while
/// native code still used it. Here every family's forward and generation run while another thread forces
/// collections and finalizers every 2 ms; results must stay exactly those of a quiet run.</summary>
public sealed class GcStressTests(ITestOutputHelper output)
{
    [Fact]
    public void Every_family_gives_the_same_results_under_continuous_collection()
    {
        using var blip2 = Blip2ForConditionalGeneration.FromPretrained(FixtureCase.Get("blip2-opt").Path);
        using var t5 = Blip2ForConditionalGeneration.FromPretrained(FixtureCase.Get("blip2-t5").Path);
        using var itm = Blip2ForImageTextRetrieval.FromPretrained(FixtureCase.Get("blip2-itm").Path);
        using var flamingo = FlamingoModel.FromPretrained(FixtureCase.Get("openflamingo-neox").Path);
        using var idefics = IdeficsForVisionText2Text.FromPretrained(FixtureCase.Get("idefics-qkln").Path);
        using var b = FixtureCase.Get("blip2-opt").OpenReference();
        using var tr = FixtureCase.Get("blip2-t5").OpenReference();
        using var ir = FixtureCase.Get("blip2-itm").OpenReference();
        using var fr = FixtureCase.Get("openflamingo-neox").OpenReference();
        using var dr = FixtureCase.Get("idefics-qkln").OpenReference();

        List<string> Round(int i)
        {
            var results = new List<string>();
            var options = new GenerationOptions { MaxNewTokens = 5, NumBeams = 1 + i % 2, RepetitionPenalty = i % 3 == 0 ? 1.5 : 1.0 };
            using var scope = NewDisposeScope();
            using (var f = blip2.Forward(b.Read("pixel_values"), b.Read("input_ids"), b.Read("attention_mask")))
                results.Add(f.Logits.sum().item<float>().ToString("R"));
            using (var g = blip2.Generate(b.Read("pixel_values"), b.Read("input_ids"), b.Read("attention_mask"), options))
                results.Add(string.Join(",", g.Sequences.SelectMany(s => s)));
            using (var g = t5.Generate(tr.Read("pixel_values"), tr.Read("input_ids"), tr.Read("attention_mask"), options))
                results.Add(string.Join(",", g.Sequences.SelectMany(s => s)));
            using (var m = itm.ImageTextMatching(ir.Read("itm_pixel_values"), ir.Read("itm_input_ids"), ir.Read("itm_attention_mask")))
                results.Add(m.Logits.sum().item<float>().ToString("R"));
            using (var g = flamingo.Generate(fr.Read("vision_x"), fr.Read("lang_x"), fr.Read("attention_mask"), options))
                results.Add(string.Join(",", g.Sequences.SelectMany(s => s)));
            using (var g = idefics.Generate(dr.Read("input_ids"), dr.Read("attention_mask"), dr.Read("pixel_values"), dr.Read("image_attention_mask"), options))
                results.Add(string.Join(",", g.Sequences.SelectMany(s => s)));
            return results;
        }

        var quiet = Enumerable.Range(0, 6).Select(Round).ToList();
        using var stop = new CancellationTokenSource();
        long collections = 0;
        int rounds = 0;
        var collector = new Thread(() =>
        {
            while (!stop.IsCancellationRequested)
            {
                GC.Collect();
                GC.WaitForPendingFinalizers();
                Interlocked.Increment(ref collections);
                // Paced so the collector does not take a whole core of the two (hundreds of collections still fall
                // inside every model call).
                Thread.Sleep(2);
            }
        }) { IsBackground = true };
        collector.Start();
        try
        {
            // At least two rounds, more (up to eight) until the collector has run 150 times beside them.
            for (int round = 0; round < 2 || (Interlocked.Read(ref collections) < 150 && round < 8); round++)
            {
                for (int i = 0; i < 6; i++)
                    Assert.Equal(quiet[i], Round(i));
                rounds = round + 1;
            }
        }
        finally
        {
            stop.Cancel();
            collector.Join();
        }
        output.WriteLine($"{rounds} rounds of 6 model calls under {collections} forced collections: identical to the quiet run");
        Assert.True(collections > 100, $"only {collections} collections ran beside the models");
    }
}
