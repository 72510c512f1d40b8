// Trains a small BLIP-2 (OPT) on procedurally drawn scenes and saves it as a published-style checkpoint
// folder (models/blip2-shapes). Deterministic for a seed on the same machine and thread count.
//   dotnet run -c Release --project samples/Multimodal.Train -- [--minutes 25] [--seed 1] [--out models/blip2-shapes]
//       [--batch 48] [--lr 2e-3] [--resume <folder>]
//   ... -- --eval <folder>       exact-match accuracy on 200 scenes of seed 424242 (never trained on)
//   ... -- --scenes <folder>     four example scenes (seed 777001) as PNG files with CAPTIONS.md
//   ... -- --quantization-sweep <folder>   the same accuracy per quantized part and 4-bit group size (QuantizationSweep)
using System.Diagnostics;
using System.Text.Json;
using Multimodal.Blip2;
using Multimodal.Common;
using Multimodal.Language.Opt;
using Multimodal.Loading;
using Multimodal.Processing;
using Multimodal.QFormer;
using Multimodal.Train;
using Multimodal.Vision;
using static TorchSharp.torch;

if (args.Length >= 2 && args[0] == "--eval")
{
    var (accuracy, misses) = await Evaluate.ExactMatchAsync(args[1], seed: 424242, count: 200);
    Console.WriteLine($"exact-match accuracy on 200 unseen scenes: {accuracy:P1}");
    foreach (var (expected, actual) in misses.Take(10)) Console.WriteLine($"  expected \"{expected}\"\n  got      \"{actual}\"");
    return;
}
if (args.Length >= 2 && args[0] == "--quantization-sweep")
{
    await QuantizationSweep.RunAsync(args[1]);
    return;
}
if (args.Length >= 2 && args[0] == "--scenes")
{
    // A few scenes from a seed never used in training or evaluation, as PNG files, with their captions.
    Directory.CreateDirectory(args[1]);
    var lines = new List<string>();
    int n = 0;
    foreach (var (shapes, background) in Scenes.Generate(777001, 4))
    {
        string file = $"scene{++n}.png";
        Scenes.SavePng(Scenes.Render(shapes, background), Path.Combine(args[1], file));
        lines.Add($"| `{file}` | {Scenes.Caption(shapes)} |");
    }
    File.WriteAllLines(Path.Combine(args[1], "CAPTIONS.md"), ["| image | caption it was drawn from |", "|---|---|", .. lines]);
    return;
}
double minutes = 25;
int seed = 1, batch = 48;
double peakLr = 2e-3;
string? resume = null;
string output = "models/blip2-shapes";
for (int i = 0; i + 1 < args.Length; i += 2)
{
    switch (args[i])
    {
        case "--minutes": minutes = double.Parse(args[i + 1]); break;
        case "--seed": seed = int.Parse(args[i + 1]); break;
        case "--out": output = args[i + 1]; break;
        case "--batch": batch = int.Parse(args[i + 1]); break;
        case "--lr": peakLr = double.Parse(args[i + 1], System.Globalization.CultureInfo.InvariantCulture); break;
        case "--resume": resume = args[i + 1]; break;
    }
}
set_num_threads(2);
manual_seed(seed);
Directory.CreateDirectory(output);
TokenizerFiles.Write(output);
var tokenizer = Gpt2Tokenizer.FromFolder(output);
var config = ShapesModel.Config();
File.WriteAllText(Path.Combine(output, "config.json"), JsonSerializer.Serialize(config, PretrainedConfig.JsonOptions));
File.WriteAllText(Path.Combine(output, "preprocessor_config.json"), ShapesModel.PreprocessorJson);
File.WriteAllText(Path.Combine(output, Multimodal.Generation.GenerationConfig.FileName), ShapesModel.GenerationConfigJson);
var processor = BlipImageProcessor.FromFolder(output);

// --resume continues from a saved folder (its float16 weights, widened to float32) with a fresh optimizer.
using var model = resume is null ? new Blip2ForConditionalGeneration(config) : Blip2ForConditionalGeneration.FromPretrained(resume);
ShapesModel.Initialize(model, fresh: resume is null);
using var optimizer = new Multimodal.Train.AdamW(model.parameters(), lr: peakLr, weightDecay: 0.01);
var clock = Stopwatch.StartNew();
var scenes = Scenes.Generate(seed * 1000 + 7, int.MaxValue).GetEnumerator();
int q = config.NumQueryTokens;
double smoothed = 0;
for (int step = 1; clock.Elapsed.TotalMinutes < minutes; step++)
{
    double value = TrainStep();
    // Linear warm-up over 200 steps, then cosine decay to a tenth over the time budget.
    double progress = clock.Elapsed.TotalMinutes / minutes;
    optimizer.LearningRate = peakLr * Math.Min(1.0, step / 200.0) * (0.1 + 0.9 * 0.5 * (1 + Math.Cos(Math.PI * Math.Min(1.0, progress))));
    optimizer.Step();
    smoothed = step == 1 ? value : 0.98 * smoothed + 0.02 * value;
    if (step % 50 == 0) Console.WriteLine($"step {step,5}  loss {smoothed:F4}  {clock.Elapsed.TotalMinutes:F1} min");
}
ShapesModel.Save(model, output);
Console.WriteLine($"saved {output} after {clock.Elapsed.TotalMinutes:F1} min");

double TrainStep()
{
    using var scope = NewDisposeScope();
    var images = new List<DecodedImage>();
    var captions = new List<IReadOnlyList<long>>();
    for (int b = 0; b < batch; b++)
    {
        scenes.MoveNext();
        var (shapes, background) = scenes.Current;
        images.Add(Scenes.Render(shapes, background));
        captions.Add(tokenizer.Encode(Scenes.Caption(shapes)));               // BOS + caption
    }
    int width = captions.Max(c => c.Count);
    var ids = new long[batch * width];
    var mask = new long[batch * width];
    var targets = Enumerable.Repeat(-100L, batch * width).ToArray();
    for (int b = 0; b < batch; b++)
        for (int t = 0; t < width; t++)
        {
            bool real = t < captions[b].Count;
            ids[b * width + t] = real ? captions[b][t] : 1;
            mask[b * width + t] = real ? 1 : 0;
            if (real) targets[b * width + t] = t + 1 < captions[b].Count ? captions[b][t + 1] : 2;   // next token, EOS last
        }
    var pixels = processor.Preprocess(images);
    var logits = model.ForwardLogits(pixels, tensor(ids, [batch, width]), tensor(mask, [batch, width]));
    var text = logits.narrow(1, q, width);                                        // positions of BOS … last word
    var loss = nn.functional.cross_entropy(text.reshape(-1, text.shape[2]), tensor(targets), ignore_index: -100);
    optimizer.ZeroGrad();
    loss.backward();
    return loss.item<float>();
}
