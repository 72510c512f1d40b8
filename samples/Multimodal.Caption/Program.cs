// Loads a BLIP-2 (OPT) checkpoint folder and runs one forward pass on a synthetic image and a BOS
// prompt, printing what was loaded and the most likely next tokens. Captioning (image decoding,
// tokenizer, generator) arrives in the next release; see README.md.
using System.Diagnostics;
using Multimodal.Blip2;
using Multimodal.Common;
using Multimodal.Language.Opt;
using Multimodal.Loading;
using static TorchSharp.torch;

string? model = null, deviceName = "cpu", dtypeName = "float32";
for (int i = 0; i < args.Length; i++)
{
    string Value() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"{args[i]} needs a value");
    switch (args[i])
    {
        case "--model": model = Value(); break;
        case "--device": deviceName = Value(); break;
        case "--dtype": dtypeName = Value(); break;
        case "-h" or "--help":
            Console.WriteLine("usage: Multimodal.Caption --model <checkpoint folder> [--device cpu|cuda] [--dtype float32|float16|bfloat16]");
            return 0;
        default:
            Console.Error.WriteLine($"error: unknown argument '{args[i]}' (see --help)");
            return 2;
    }
}
if (model is null)
{
    Console.Error.WriteLine("error: no --model given. Pass a BLIP-2 checkpoint folder (config.json + *.safetensors); " +
                            "models/README.md says which files of Salesforce/blip2-opt-2.7b to download.");
    return 2;
}

try
{
    var device = DeviceCheck.Parse(deviceName);
    var dtype = dtypeName switch
    {
        "float32" => ScalarType.Float32, "float16" => ScalarType.Float16, "bfloat16" => ScalarType.BFloat16,
        _ => throw new ArgumentException($"--dtype '{dtypeName}': expected float32, float16 or bfloat16"),
    };
    var clock = Stopwatch.StartNew();
    using var blip2 = Blip2ForConditionalGeneration.FromPretrained(model, device, dtype);
    long parameters = blip2.state_dict().Where(kv => kv.Key != "language_model.lm_head.weight").Sum(kv => kv.Value.numel());
    Console.WriteLine($"Loaded {Path.GetFullPath(model)}: {parameters:N0} parameters, {dtype} on {device.type}, {clock.ElapsedMilliseconds} ms");

    var config = blip2.Config;
    var text = (OptConfig)config.TextConfig;
    int size = config.VisionConfig.ImageSize;
    using var pixels = randn(1, 3, size, size, generator: new Generator(0));
    var prompt = Enumerable.Repeat((long)(config.ImageTokenIndex ?? 0), config.ImageTokenIndex is null ? 0 : config.NumQueryTokens)
        .Append(text.BosTokenId).ToArray();
    using var ids = tensor(prompt).unsqueeze(0);
    clock.Restart();
    using var output = blip2.Forward(pixels, ids);
    using var last = output.Logits[0, -1].to(ScalarType.Float32).softmax(0);
    var (probs, tokens) = last.topk(5);
    Console.WriteLine($"Forward pass: logits {string.Join("x", output.Logits.shape)} in {clock.ElapsedMilliseconds} ms");
    Console.WriteLine("Most likely first tokens: " + string.Join(", ",
        tokens.data<long>().ToArray().Zip(probs.data<float>().ToArray(), (t, p) => $"{t} ({p:P1})")));
    return 0;
}
catch (Exception e) when (e is ConfigException or CheckpointException or FileNotFoundException
                            or DirectoryNotFoundException or NotSupportedException or ArgumentException)
{
    Console.Error.WriteLine($"error: {e.Message}");
    return 1;
}
