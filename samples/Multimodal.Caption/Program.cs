// Multimodal.Caption: caption images, or answer a question about them, with a BLIP-2 checkpoint folder.
//   dotnet run --project samples/Multimodal.Caption -- [--model <folder or hub id>] image.jpg [more.png ...]
//       [--prompt "a photo of"] [--question "what is on the table?"] [--max-new-tokens N] [--min-new-tokens 0] [--beams 1]
//       [--device cpu|cuda] [--dtype float32|float16|bfloat16] [--quantize none|int8|int4]
// Captions stream as they are generated (greedy); with --beams > 1 each appears when finished.
// A retrieval checkpoint (Salesforce/blip2-itm-vit-g) scores texts against images:
//   --model <folder> cat.jpg dog.jpg --match "a cat on a sofa" --match "a dog in the snow"
// Flamingo-style models (an OpenFlamingo folder or an IDEFICS checkpoint) take an interleaved prompt made of
// --image and --text parts in the order given, e.g. few-shot:
//   --model <folder> --image cats.jpg --text "An image of two cats.<|endofchunk|>" --image query.jpg --text "An image of"
using System.CommandLine;
using Multimodal;
using Multimodal.Blip2;
using Multimodal.InstructBlip;
using Multimodal.Common;
using Multimodal.Generation;
using Multimodal.Loading;
using Multimodal.Processing;
using static TorchSharp.torch;

var model = new Option<string?>("--model")
{
    Description = "checkpoint folder, or hub id (Salesforce/blip2-opt-2.7b) in the local Hugging Face cache " +
                  "[default: models/blip2-shapes, the small model this project trained, found from the working directory or the sample's own location]",
};
var revision = new Option<string?>("--revision") { Description = "with a hub id: branch, tag or commit in the cache [default: main]" };
var images = new Argument<string[]>("images") { Description = "image files to caption", Arity = ArgumentArity.ZeroOrMore };
var prompt = new Option<string>("--prompt") { Description = "text the caption starts with, e.g. \"a photo of\"", DefaultValueFactory = _ => "" };
var question = new Option<string?>("--question") { Description = "ask this question about each image instead of captioning" };
var maxNewTokens = new Option<int?>("--max-new-tokens") { Description = "most tokens to generate [default: the model's generation_config.json, else 20]" };
var minNewTokens = new Option<int?>("--min-new-tokens") { Description = "fewest tokens to generate before the end token is allowed [default: 0]" };
var beams = new Option<int?>("--beams") { Description = "beam search width (1 = greedy, streamed) [default: 1]" };
var device = new Option<string>("--device") { Description = "cpu or cuda", DefaultValueFactory = _ => "cpu" };
var dtype = new Option<string>("--dtype") { Description = "float32, float16 or bfloat16", DefaultValueFactory = _ => "float32" };
var quantize = new Option<string>("--quantize")
{
    Description = "store the language model's weights in int8 (per channel) or int4 (per 32-input group), or none", DefaultValueFactory = _ => "none",
};

var matchTexts = new Option<string[]>("--match") { Description = "retrieval checkpoints: score this text against each image (repeatable)" };
var imagePart = new Option<string[]>("--image") { Description = "Flamingo/IDEFICS: an image part of the interleaved prompt (repeatable, order kept)" };
var textPart = new Option<string[]>("--text") { Description = "Flamingo/IDEFICS: a text part of the interleaved prompt (repeatable, order kept)" };

var root = new RootCommand("Caption images or answer questions about them with BLIP-2, InstructBLIP, OpenFlamingo or IDEFICS, in .NET.")
{
    model, revision, images, prompt, question, maxNewTokens, minNewTokens, beams, device, dtype, quantize, imagePart, textPart, matchTexts,
};
root.SetAction(async (parse, cancellationToken) =>
{
    var files = parse.GetValue(images) ?? [];
    // Unknown options reach the image list (it takes any token): name them as what they are.
    if (files.FirstOrDefault(f => f.StartsWith('-') && !File.Exists(f)) is { } unknown)
    {
        Console.Error.WriteLine($"error: unknown option '{unknown}' (see --help).");
        return 2;
    }
    string? name = parse.GetValue(model);
    string? folder;
    try
    {
        folder = name is null ? DefaultModel() : HubCache.Resolve(name, parse.GetValue(revision));
    }
    catch (Exception e) when (e is DirectoryNotFoundException or ArgumentException)
    {
        return Fail(e);
    }
    if (folder is null)
    {
        Console.Error.WriteLine("error: no --model given and models/blip2-shapes was not found. Download a BLIP-2 checkpoint as models/README.md " +
                                "explains (Salesforce/blip2-opt-2.7b), or try the pipeline with the tiny random-weight folder: --model models/blip2-opt-tiny-random");
        return 2;
    }
    int? max = parse.GetValue(maxNewTokens), min = parse.GetValue(minNewTokens), width = parse.GetValue(beams);
    var options = new GenerationOptions { MaxNewTokens = max };
    if (min is int m) options = options with { MinNewTokens = m };
    if (width is int w) options = options with { NumBeams = w };
    WeightQuantization? quantization = parse.GetValue(quantize) switch
    {
        "none" => WeightQuantization.None, "int8" => WeightQuantization.Int8, "int4" => WeightQuantization.Int4, _ => null,
    };
    string? badOption = quantization is null ? $"--quantize '{parse.GetValue(quantize)}': expected none, int8 or int4."
        : max < 1 ? $"--max-new-tokens must be at least 1 (got {max})."
        : min < 0 ? $"--min-new-tokens must not be negative (got {min})."
        : width < 1 ? $"--beams must be at least 1 (got {width})."
        : null;
    if (badOption is not null || quantization is not WeightQuantization quantized)
    {
        Console.Error.WriteLine($"error: {badOption}");
        return 2;
    }
    try
    {
        options.Validate();
        // The library reads the family; a folder without config.json goes on to BLIP-2's loader, which names what is missing.
        var family = File.Exists(Path.Combine(folder, "config.json")) ? VisionLanguageModel.Family(folder) : ModelFamily.Blip2;
        switch (family)
        {
            case ModelFamily.OpenFlamingo or ModelFamily.Idefics:
                return await RunInterleavedAsync(folder, args, options, parse.GetValue(device)!, parse.GetValue(dtype)!, quantized, cancellationToken);
            case ModelFamily.InstructBlip:
                return await RunInstructBlipAsync(folder, files, parse.GetValue(question) ?? parse.GetValue(prompt) ?? "", options,
                    parse.GetValue(device)!, parse.GetValue(dtype)!, quantized, cancellationToken);
            case ModelFamily.Blip2Retrieval:
                return await RunRetrievalAsync(folder, files, parse.GetValue(matchTexts) ?? [], parse.GetValue(device)!, parse.GetValue(dtype)!, cancellationToken);
        }
    }
    catch (Exception e) when (IsUserError(e))
    {
        return Fail(e);
    }
    if (files.Length == 0)
    {
        Console.Error.WriteLine("error: give at least one image file to caption (see --help).");
        return 2;
    }
    bool midLine = false;
    try
    {
        var target = DeviceCheck.Parse(parse.GetValue(device)!);
        var type = ParseDtype(parse.GetValue(dtype)!);
        var decoded = files.Select(f => (File: f, Image: ImageDecoder.Decode(f))).ToList(); // fail early on a bad image
        using var blip2 = Blip2Captioner.FromPretrained(folder, target, type, new ConsoleProgress(), quantization: quantized);
        string text = parse.GetValue(question) is string q ? Blip2Captioner.QuestionPrompt(q) : parse.GetValue(prompt)!;
        var rowOptions = FitLengthBudget(blip2, text, options);
        foreach (var (file, image) in decoded)
        {
            Console.Write($"{file}: {text}");
            midLine = true;
            TextResult result;
            if (rowOptions.WithDefaults(blip2.Model.GenerationConfig).NumBeams == 1)
            {
                bool first = true;
                result = null!;
                await foreach (var chunk in blip2.StreamRawPromptAsync(image, text, rowOptions, cancellationToken))
                {
                    if (chunk.Result is { } done) result = done;
                    if (chunk.Text.Length == 0) continue;
                    Console.Write(first && text.Length == 0 ? chunk.Text.TrimStart() : chunk.Text);
                    first = false;
                }
            }
            else
            {
                result = await blip2.CaptionAsync(image, text, rowOptions, cancellationToken);
                Console.Write((text.Length == 0 ? "" : " ") + result.Text);
            }
            if (result.Text.Length == 0)
                Console.Write(result.FinishReason == FinishReason.Length
                    ? $"(no text within {result.OutputTokens} new tokens)"
                    : "(empty: the model ended the text at once)");
            Console.WriteLine();
            midLine = false;
            WarnIfCut(file, result);
        }
        return 0;
    }
    catch (Exception e) when (IsUserError(e))
    {
        if (midLine) Console.WriteLine();
        return Fail(e);
    }
});
var parsed = root.Parse(args);
if (parsed.Errors.Count > 0)
{
    // One line, not the whole help: the first problem and where to look.
    string problem = System.Text.RegularExpressions.Regex.Replace(parsed.Errors[0].Message.TrimEnd('.'),
        @" as expected type '[^']*Int32[^']*'", " as a whole number");
    Console.Error.WriteLine($"error: {problem} (see --help).");
    return 2;
}
return await parsed.InvokeAsync();

static bool IsUserError(Exception e) =>
    e is ConfigException or CheckpointException or ImageDecodeException or FileNotFoundException or DirectoryNotFoundException
        or NotSupportedException or ArgumentException or InvalidDataException or TorchSharpLoadException;

// One line naming the problem; .NET's "(Parameter 'x')" suffix is for programmers, not users.
static int Fail(Exception e)
{
    string message = e.Message.Split('\n')[0];
    if (e is ArgumentException { ParamName: { } param }) message = message.Replace($" (Parameter '{param}')", "", StringComparison.Ordinal);
    Console.Error.WriteLine($"error: {message}");
    return 1;
}

// OPT's learned positions end at max_position_embeddings: ask for no more new tokens than fit, and say so.
static GenerationOptions FitLengthBudget(Blip2Captioner blip2, string prompt, GenerationOptions options)
{
    var effective = options.WithDefaults(blip2.Model.GenerationConfig);
    if (effective.MaxLength is not null && effective.MaxNewTokens is null) return options;
    int wanted = effective.MaxNewTokens ?? 20;
    if (blip2.MaxNewTokensFor(prompt) is not int budget || wanted <= budget) return options;
    if (budget <= 0) throw new ArgumentException("The prompt alone fills this model's max_position_embeddings; shorten it.");
    Console.Error.WriteLine($"warning: {wanted} new tokens do not fit after this prompt (the model's max_position_embeddings); generating at most {budget}.");
    return options with { MaxNewTokens = budget };
}

static void WarnIfCut(string what, TextResult result)
{
    if (result.FinishReason == FinishReason.Length)
        Console.Error.WriteLine($"warning: {what}: the text stopped at the limit of {result.OutputTokens} new tokens and may be cut; raise --max-new-tokens.");
}

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
    catch (Exception e) when (IsUserError(e))
    {
        return Fail(e);
    }
}

// InstructBLIP: the question (or prompt) is the instruction, sent to the Q-Former and the language model; with
// neither, the captioning instruction of the InstructBLIP paper's templates.
static async Task<int> RunInstructBlipAsync(string folder, string[] files, string instruction, GenerationOptions options,
    string deviceName, string dtypeName, WeightQuantization quantization, CancellationToken cancellationToken)
{
    if (files.Length == 0)
    {
        Console.Error.WriteLine("error: give at least one image file (see --help).");
        return 2;
    }
    if (instruction.Length == 0) instruction = InstructBlipCaptioner.CaptionInstruction;
    try
    {
        var decoded = files.Select(f => (File: f, Image: ImageDecoder.Decode(f))).ToList();
        using var model = InstructBlipCaptioner.FromPretrained(folder, DeviceCheck.Parse(deviceName), ParseDtype(dtypeName), new ConsoleProgress(),
            quantization: quantization);
        foreach (var (file, image) in decoded)
        {
            Console.Write($"{file}: ");
            TextResult? result = null;
            if (options.WithDefaults(model.Model.GenerationConfig).NumBeams == 1)
                await foreach (var chunk in model.StreamAsync(image, instruction, options, cancellationToken))
                {
                    if (chunk.Result is { } done) result = done;
                    Console.Write(chunk.Text);
                }
            else
            {
                result = (await model.AskAsync(image, instruction, options, cancellationToken));
                Console.Write(result.Text);
            }
            Console.WriteLine();
            if (result is not null) WarnIfCut(file, result);
        }
        return 0;
    }
    catch (Exception e) when (IsUserError(e))
    {
        return Fail(e);
    }
}

static async Task<int> RunInterleavedAsync(string folder, string[] args, GenerationOptions options, string deviceName, string dtypeName,
    WeightQuantization quantization, CancellationToken cancellationToken)
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
        var device = DeviceCheck.Parse(deviceName);
        var dtype = ParseDtype(dtypeName);
        var progress = new ConsoleProgress();
        using var model = VisionLanguageModel.FromPretrained(folder, device, dtype, progress, quantization: quantization);
        var result = await ((InterleavedPipeline)model).GenerateAsync(prompt, options, cancellationToken);
        Console.WriteLine(result.Text.Length > 0 ? result.Text : "(empty: the model ended the text at once)");
        WarnIfCut("the answer", result);
        return 0;
    }
    catch (Exception e) when (IsUserError(e))
    {
        return Fail(e);
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
