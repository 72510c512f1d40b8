// Decode-speed benchmark (not part of the test run): per-token greedy decode time with and without the
// KV cache, on a BLIP-2 of realistic widths built in code with random weights — a 24-layer ViT-L-sized
// image encoder and an OPT-350m-sized language model (24 layers, width 1024, vocabulary 50272).
//   dotnet run -c Release --project samples/Multimodal.Benchmarks [-- --new-tokens 32 --dtype float32]
using System.Diagnostics;
using Multimodal.Blip2;
using Multimodal.Generation;
using Multimodal.Language.Opt;
using Multimodal.QFormer;
using Multimodal.Vision;
using static TorchSharp.torch;

int newTokens = 32;
var dtype = ScalarType.Float32;
for (int i = 0; i + 1 < args.Length; i += 2)
{
    if (args[i] == "--new-tokens") newTokens = int.Parse(args[i + 1]);
    else if (args[i] == "--dtype") dtype = args[i + 1] == "bfloat16" ? ScalarType.BFloat16 : ScalarType.Float32;
}
manual_seed(0);
var config = new Blip2Config
{
    VisionConfig = new Blip2VisionConfig { HiddenSize = 1024, IntermediateSize = 4096, NumHiddenLayers = 24, NumAttentionHeads = 16, ImageSize = 224, PatchSize = 14 },
    QformerConfig = new QFormerConfig { NumHiddenLayers = 12 },
    TextConfig = new OptConfig { HiddenSize = 1024, FfnDim = 4096, NumHiddenLayers = 24, NumAttentionHeads = 16 },
    NumQueryTokens = 32,
}.Normalize();
var clock = Stopwatch.StartNew();
using var model = new Blip2ForConditionalGeneration(config, dtype: dtype);
long parameters = model.state_dict().Where(kv => kv.Key != "language_model.lm_head.weight").Sum(kv => kv.Value.numel());
Console.WriteLine($"BLIP-2 with {parameters / 1e6:F0}M random parameters ({dtype}) built in {clock.ElapsedMilliseconds} ms; {get_num_threads()} threads");

using var pixels = randn(1, 3, 224, 224);
using var prompt = tensor(new long[] { 2, 102, 1345, 9 }).unsqueeze(0); // "</s>a photo of"
foreach (bool cache in new[] { true, false, true, false })
{
    var options = new GenerationOptions { MaxNewTokens = newTokens, MinNewTokens = newTokens, UseCache = cache };
    var stepTimes = new List<double>();
    var step = Stopwatch.StartNew();
    clock.Restart();
    using var output = model.Generate(pixels, prompt, null, options, null, (_, _) =>
    {
        stepTimes.Add(step.Elapsed.TotalMilliseconds);
        step.Restart();
    }, default);
    double total = clock.Elapsed.TotalMilliseconds;
    var decode = stepTimes.Skip(1).ToList(); // step 0 includes the image encoder, Q-Former and prompt prefill
    Console.WriteLine($"KV cache {(cache ? "on " : "off")}: first token {stepTimes[0]:F0} ms (vision + Q-Former + {32 + 4}-position prefill), " +
                      $"then {decode.Average():F1} ms/token (first {decode.First():F1}, last {decode.Last():F1}); {newTokens} tokens in {total:F0} ms");
}
