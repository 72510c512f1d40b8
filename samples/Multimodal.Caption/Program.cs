// Multimodal.Caption: caption images, or answer a question about them, with a BLIP-2 checkpoint folder.
//   dotnet run --project samples/Multimodal.Caption -- --model <folder> image.jpg [more.png ...]
//       [--prompt "a photo of"] [--question "what is on the table?"] [--max-new-tokens 60] [--min-new-tokens 0] [--beams 1]
//       [--device cpu|cuda] [--dtype float32|float16|bfloat16]
// Captions stream as they are generated (greedy); with --beams > 1 each appears when finished.
// A retrieval checkpoint (Salesforce/blip2-itm-vit-g) scores texts against images:
//   --model <folder> cat.jpg dog.jpg --match "a cat on a sofa" --match "a dog in the snow"
// Flamingo-style models (an OpenFlamingo folder or an IDEFICS checkpoint) take an interleaved prompt made of
// --image and --text parts in the order given, e.g. few-shot:
//   --model <folder> --image cats.jpg --text "An image of two cats.<|endofchunk|>" --image query.jpg --text "An image of"
using System.CommandLine;
using System.Text.Json;
using Multimodal.Blip2;
using Multimodal.Flamingo;
using Multimodal.Common;
using Multimodal.Generation;
using Multimodal.Loading;
using Multimodal.Processing;
using static TorchSharp.torch;

var model = new Option<string?>("--model") { Description = "BLIP-2 checkpoint folder (config.json, *.safetensors, tokenizer and preprocessor files)" };
var images = new Argument<string[]>("images") { Description = "image files to caption", Arity = ArgumentArity.ZeroOrMore };
var prompt = new Option<string>("--prompt") { Description = "text the caption starts with, e.g. \"a photo of\"", DefaultValueFactory = _ => "" };
var question = new Option<string?>("--question") { Description = "ask this question about each image instead of captioning" };
var maxNewTokens = new Option<int>("--max-new-tokens") { Description = "most tokens to generate", DefaultValueFactory = _ => 60 };
var minNewTokens = new Option<int>("--min-new-tokens") { Description = "fewest tokens to generate before the end token is allowed", DefaultValueFactory = _ => 0 };
var beams = new Option<int>("--beams") { Description = "beam search width (1 = greedy, streamed)", DefaultValueFactory = _ => 1 };
var device = new Option<string>("--device") { Description = "cpu or cuda", DefaultValueFactory = _ => "cpu" };
var dtype = new Option<string>("--dtype") { Description = "float32, float16 or bfloat16", DefaultValueFactory = _ => "float32" };

var matchTexts = new Option<string[]>("--match") { Description = "retrieval checkpoints: score this text against each image (repeatable)" };
var imagePart = new Option<string[]>("--image") { Description = "Flamingo/IDEFICS: an image part of the interleaved prompt (repeatable, order kept)" };
var textPart = new Option<string[]>("--text") { Description = "Flamingo/IDEFICS: a text part of the interleaved prompt (repeatable, order kept)" };

var root = new RootCommand("Caption images or answer questions about them with BLIP-2, OpenFlamingo or IDEFICS, in .NET.")
{
    model, images, prompt, question, maxNewTokens, minNewTokens, beams, device, dtype, imagePart, textPart, matchTexts,
};
root.SetAction(async (parse, cancellationToken) =>
{
    string? folder = parse.GetValue(model) ?? DefaultModel();
    if (folder is null)
    {
        Console.Error.WriteLine("error: no --model given. Download a BLIP-2 checkpoint folder as models/README.md explains " +
                                "(Salesforce/blip2-opt-2.7b), or try the pipeline with the tiny random-weight folder: --model models/blip2-opt-tiny-random");
        return 2;
    }
    if (IsInterleavedModel(folder))
        return await RunInterleavedAsync(folder, args, parse.GetValue(maxNewTokens), parse.GetValue(minNewTokens), parse.GetValue(beams),
            parse.GetValue(device)!, parse.GetValue(dtype)!, cancellationToken);
    var files = parse.GetValue(images) ?? [];
    if (IsRetrievalModel(folder))
        return await RunRetrievalAsync(folder, files, parse.GetValue(matchTexts) ?? [], parse.GetValue(device)!, parse.GetValue(dtype)!, cancellationToken);
    if (files.Length == 0)
    {
        Console.Error.WriteLine("error: give at least one image file to caption.");
        return 2;
    }
    bool midLine = false;
    try
    {
        var options = new GenerationOptions
        {
            MaxNewTokens = parse.GetValue(maxNewTokens), MinNewTokens = parse.GetValue(minNewTokens), NumBeams = parse.GetValue(beams),
        };
        options.Validate();
        var target = DeviceCheck.Parse(parse.GetValue(device)!);
        var type = ParseDtype(parse.GetValue(dtype)!);
        var decoded = files.Select(f => (File: f, Image: ImageDecoder.Decode(f))).ToList(); // fail early on a bad image
        using var blip2 = Blip2Captioner.FromPretrained(folder, target, type, new ConsoleProgress());
        string text = parse.GetValue(question) is string q ? Blip2Captioner.QuestionPrompt(q) : parse.GetValue(prompt)!;
        foreach (var (file, image) in decoded)
        {
            Console.Write($"{file}: {text}");
            midLine = true;
            if (options.NumBeams == 1)
            {
                bool first = true;
                await foreach (var piece in blip2.CaptionStreamAsync(image, text, options, cancellationToken))
                {
                    Console.Write(first && text.Length == 0 ? piece.TrimStart() : piece);
                    first = false;
                }
                Console.WriteLine();
                midLine = false;
            }
            else
            {
                var result = await blip2.CaptionAsync(image, text, options, cancellationToken);
                Console.WriteLine((text.Length == 0 ? "" : " ") + result.Text);
                midLine = false;
            }
        }
        return 0;
    }
    catch (Exception e) when (e is ConfigException or CheckpointException or ImageDecodeException or FileNotFoundException
                                or DirectoryNotFoundException or NotSupportedException or ArgumentException or InvalidDataException)
    {
        if (midLine) Console.WriteLine();
        Console.Error.WriteLine($"error: {e.Message.Split('\n')[0]}");
        return 1;
    }
});
return await root.Parse(args).InvokeAsync();

// The small model trained by the project (models/blip2-shapes), found from the working directory or the
// sample's own location, so the first command of the README needs no download.
static string? DefaultModel()
{
    foreach (var start in new[] { Directory.GetCurrentDirectory(), AppContext.BaseDirectory })
        for (var dir = new DirectoryInfo(start); dir is not null; dir = dir.Parent)
        {
            string candidate = Path.Combine(dir.FullName, "models", "blip2-shapes");
            if (File.Exists(Path.Combine(candidate, "config.json"))) return candidate;
        }
    return null;
}

static ScalarType ParseDtype(string name) => name switch
{
    "float32" => ScalarType.Float32,
    "float16" => ScalarType.Float16,
    "bfloat16" => ScalarType.BFloat16,
    _ => throw new ArgumentException($"--dtype '{name}': expected float32, float16 or bfloat16."),
};

static bool IsRetrievalModel(string folder)
{
    string config = Path.Combine(folder, "config.json");
    return File.Exists(config) && File.ReadAllText(config).Contains("\"Blip2ForImageTextRetrieval\"");
}

// Retrieval: a small ranked table per image, by match probability, with the contrastive similarity.
static async Task<int> RunRetrievalAsync(string folder, string[] files, string[] texts, string deviceName, string dtypeName, CancellationToken cancellationToken)
{
    if (files.Length == 0 || texts.Length == 0)
    {
        Console.Error.WriteLine("error: a retrieval checkpoint needs image files and at least one --match text.");
        return 2;
    }
    try
    {
        var decoded = files.Select(f => ImageDecoder.Decode(f)).ToList();
        using var retriever = Blip2Retriever.FromPretrained(folder, DeviceCheck.Parse(deviceName), ParseDtype(dtypeName), new ConsoleProgress());
        var similarity = await retriever.SimilarityAsync(decoded, texts, cancellationToken);
        for (int i = 0; i < decoded.Count; i++)
        {
            var match = await retriever.MatchAsync(decoded[i], texts, cancellationToken);
            Console.WriteLine(files[i]);
            Console.WriteLine($"  {"match",7}  {"similarity",10}  text");
            foreach (int t in Enumerable.Range(0, texts.Length).OrderByDescending(t => match[t]))
                Console.WriteLine($"  {match[t],7:P1}  {similarity[i, t],10:F4}  {texts[t]}");
        }
        return 0;
    }
    catch (Exception e) when (e is ConfigException or CheckpointException or ImageDecodeException or FileNotFoundException
                                or DirectoryNotFoundException or NotSupportedException or ArgumentException or InvalidDataException)
    {
        Console.Error.WriteLine($"error: {e.Message.Split('\n')[0]}");
        return 1;
    }
}

// An OpenFlamingo folder's config.json holds lang_encoder_config; an IDEFICS one says model_type "idefics".
static bool IsInterleavedModel(string folder)
{
    string config = Path.Combine(folder, "config.json");
    if (!File.Exists(config)) return false;
    try
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(config));
        return doc.RootElement.TryGetProperty("lang_encoder_config", out _)
               || (doc.RootElement.TryGetProperty("model_type", out var t) && t.GetString() == "idefics");
    }
    catch (JsonException)
    {
        return false;
    }
}

static async Task<int> RunInterleavedAsync(string folder, string[] args, int maxNew, int minNew, int beams, string deviceName, string dtypeName,
    CancellationToken cancellationToken)
{
    try
    {
        // System.CommandLine groups values per option; the prompt needs the parts in command-line order.
        var prompt = InterleavedPrompt.Create();
        for (int i = 0; i + 1 < args.Length; i++)
        {
            if (args[i] == "--image") prompt = prompt.Image(ImageDecoder.Decode(args[++i]));
            else if (args[i] == "--text") prompt = prompt.Text(args[++i]);
        }
        if (prompt.Parts.Count == 0)
        {
            Console.Error.WriteLine("error: give the prompt as --image and --text parts, in order.");
            return 2;
        }
        var options = new GenerationOptions { MaxNewTokens = maxNew, MinNewTokens = minNew, NumBeams = beams };
        options.Validate();
        var device = DeviceCheck.Parse(deviceName);
        var dtype = ParseDtype(dtypeName);
        var progress = new ConsoleProgress();
        InterleavedResult result;
        if (File.ReadAllText(Path.Combine(folder, "config.json")).Contains("\"lang_encoder_config\""))
        {
            using var pipeline = FlamingoPipeline.FromFolder(folder, device, dtype, progress);
            result = await pipeline.GenerateAsync(prompt, options, cancellationToken);
        }
        else
        {
            using var pipeline = IdeficsPipeline.FromPretrained(folder, device, dtype, progress);
            result = await pipeline.GenerateAsync(prompt, options, cancellationToken);
        }
        Console.WriteLine(result.Text);
        return 0;
    }
    catch (Exception e) when (e is ConfigException or CheckpointException or ImageDecodeException or FileNotFoundException
                                or DirectoryNotFoundException or NotSupportedException or ArgumentException or InvalidDataException)
    {
        Console.Error.WriteLine($"error: {e.Message.Split('\n')[0]}");
        return 1;
    }
}

/// <summary>A loading bar on a terminal; nothing when output is redirected.</summary>
sealed class ConsoleProgress : IProgress<LoadProgress>
{
    public void Report(LoadProgress value)
    {
        if (Console.IsErrorRedirected) return;
        const int width = 30;
        int filled = (int)(width * value.BytesLoaded / Math.Max(1, value.TotalBytes));
        Console.Error.Write($"\rLoading weights [{new string('#', filled)}{new string(' ', width - filled)}] {value.Loaded}/{value.Total} tensors, {value.BytesLoaded / 1e6:F0} MB");
        if (value.Loaded == value.Total) Console.Error.WriteLine();
    }
}
