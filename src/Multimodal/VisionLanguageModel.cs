using Microsoft.Extensions.AI;
using Multimodal.Blip2;
using Multimodal.Common;
using Multimodal.Generation;
using Multimodal.InstructBlip;
using Multimodal.Loading;
using Multimodal.Processing;

namespace Multimodal;

/// <summary>What every generative family's façade offers (<see cref="Blip2Captioner"/>, <see cref="InstructBlipCaptioner"/>,
/// <c>FlamingoPipeline</c>, <c>IdeficsPipeline</c>), so code can load any of them with
/// <see cref="VisionLanguageModel.FromPretrained"/> and use it the same way. The interleaved families also take a whole
/// interleaved prompt (<see cref="Generation.InterleavedPipeline.GenerateAsync(InterleavedPrompt, GenerationOptions?, CancellationToken)"/>).</summary>
public interface IVisionLanguageModel : IDisposable
{
    /// <summary>The language model's tokenizer (what prompts are counted and streams decoded with).</summary>
    ITextTokenizer Tokenizer { get; }

    /// <summary>Positions the language model was trained for, or null where its config names none (T5).</summary>
    int? ContextLength { get; }

    /// <summary>Captions an image (the family's own captioning prompt).</summary>
    Task<TextResult> CaptionAsync(DecodedImage image, GenerationOptions? options = null, CancellationToken cancellationToken = default);

    /// <summary>Answers a question about an image, in the family's prompt format.</summary>
    Task<TextResult> AskAsync(DecodedImage image, string question, GenerationOptions? options = null, CancellationToken cancellationToken = default);

    /// <summary>Streams the caption (<paramref name="question"/> null) or the answer; the last chunk carries the whole result.</summary>
    IAsyncEnumerable<TextChunk> StreamAsync(DecodedImage image, string? question, GenerationOptions? options = null, CancellationToken cancellationToken = default);

    /// <summary>Captions a batch of images (left-padded rows; each gets what it gets alone).</summary>
    Task<IReadOnlyList<TextResult>> CaptionAsync(IReadOnlyList<DecodedImage> images, GenerationOptions? options = null, CancellationToken cancellationToken = default);

    /// <summary>Answers one question per image, as one batch.</summary>
    Task<IReadOnlyList<TextResult>> AskAsync(IReadOnlyList<DecodedImage> images, IReadOnlyList<string> questions, GenerationOptions? options = null,
        CancellationToken cancellationToken = default);

    /// <summary>Streams the caption as decoded text pieces (a character split across tokens comes out whole).</summary>
    IAsyncEnumerable<string> CaptionStreamAsync(DecodedImage image, GenerationOptions? options = null, CancellationToken cancellationToken = default) =>
        GenerationStream.TextAsync(StreamAsync(image, null, options, cancellationToken), cancellationToken);

    /// <summary>Streams the answer as decoded text pieces.</summary>
    IAsyncEnumerable<string> AskStreamAsync(DecodedImage image, string question, GenerationOptions? options = null, CancellationToken cancellationToken = default) =>
        GenerationStream.TextAsync(StreamAsync(image, question, options, cancellationToken), cancellationToken);

    /// <summary>The model as a <see cref="IChatClient"/> (the façade keeps owning the model).</summary>
    IChatClient AsChatClient(string? modelId = null);
}

/// <summary>The model families a checkpoint folder can hold.</summary>
public enum ModelFamily
{
    /// <summary>BLIP-2 captioning and VQA (<c>model_type</c> "blip-2").</summary>
    Blip2,
    /// <summary>BLIP-2 image–text retrieval (<c>Blip2ForImageTextRetrieval</c>): embeddings and match scores, no text.</summary>
    Blip2Retrieval,
    /// <summary>InstructBLIP ("instructblip").</summary>
    InstructBlip,
    /// <summary>IDEFICS ("idefics").</summary>
    Idefics,
    /// <summary>OpenFlamingo (our config.json with <c>lang_encoder_config</c>; OpenFlamingo publishes no config).</summary>
    OpenFlamingo,
}

/// <summary>Loads a vision-language checkpoint whatever its family: the one place that reads which family a folder holds.</summary>
public static class VisionLanguageModel
{
    /// <summary>The family of a checkpoint folder, from its config.json.</summary>
    /// <exception cref="ConfigException">config.json is missing, malformed, or names no family this library implements.</exception>
    public static ModelFamily Family(string folder)
    {
        string config = Path.Combine(folder, "config.json");
        if (!File.Exists(config)) throw new ConfigException(config, "there is no config.json: not a checkpoint folder.");
        System.Text.Json.JsonElement root;
        try
        {
            using var doc = System.Text.Json.JsonDocument.Parse(File.ReadAllText(config));
            root = doc.RootElement.Clone();
        }
        catch (System.Text.Json.JsonException e)
        {
            throw new ConfigException(config, $"invalid JSON: {e.Message}", e);
        }
        if (root.ValueKind != System.Text.Json.JsonValueKind.Object) throw new ConfigException(config, "the file does not hold a JSON object.");
        string? modelType = root.TryGetProperty("model_type", out var t) && t.ValueKind == System.Text.Json.JsonValueKind.String ? t.GetString() : null;
        bool retrieval = root.TryGetProperty("architectures", out var a) && a.ValueKind == System.Text.Json.JsonValueKind.Array
            && a.EnumerateArray().Any(x => x.ValueKind == System.Text.Json.JsonValueKind.String && x.GetString() == "Blip2ForImageTextRetrieval");
        return modelType switch
        {
            "blip-2" => retrieval ? ModelFamily.Blip2Retrieval : ModelFamily.Blip2,
            "instructblip" => ModelFamily.InstructBlip,
            "idefics" => ModelFamily.Idefics,
            null when root.TryGetProperty("lang_encoder_config", out _) => ModelFamily.OpenFlamingo,
            null => throw new ConfigException(config, "there is no model_type (and no lang_encoder_config, as an OpenFlamingo folder has); expected \"blip-2\", \"instructblip\" or \"idefics\"."),
            _ => throw new ConfigException(config, $"model_type is \"{modelType}\"; the families are \"blip-2\", \"instructblip\", \"idefics\" and OpenFlamingo folders."),
        };
    }

    /// <summary>"blip-2" → <see cref="Blip2Captioner"/>, "instructblip" → <see cref="InstructBlipCaptioner"/>, "idefics" →
    /// <c>IdeficsPipeline</c>, an OpenFlamingo folder → <c>FlamingoPipeline</c>. A retrieval model is refused: it gives
    /// embeddings, not text (<see cref="Blip2Retriever"/>).</summary>
    /// <param name="folder">a checkpoint folder, or a hub id in the local Hugging Face cache.</param>
    /// <param name="device">CPU (default) or CUDA.</param>
    /// <param name="dtype">Float32 (default), Float16 or BFloat16.</param>
    /// <param name="progress">receives a report after each weight tensor.</param>
    /// <param name="revision">with a hub id: the branch, tag or commit (default main).</param>
    /// <param name="quantization">weight-only quantization of the language model (see <see cref="WeightQuantization"/>).</param>
    /// <param name="batching">dynamic batching of concurrent requests (see <see cref="BatchingOptions"/>), for every family.</param>
    /// <exception cref="ConfigException">config.json is missing, names no family, or holds a retrieval model (the message says
    /// which class loads it).</exception>
    public static IVisionLanguageModel FromPretrained(string folder, Device? device = null, ScalarType? dtype = null,
        IProgress<LoadProgress>? progress = null, string? revision = null, BatchingOptions? batching = null,
        WeightQuantization quantization = WeightQuantization.None)
    {
        string resolved = HubCache.Resolve(folder, revision);
        return Family(resolved) switch
        {
            ModelFamily.Blip2 => Blip2Captioner.FromPretrained(resolved, device, dtype, progress, batching: batching, quantization: quantization),
            ModelFamily.InstructBlip => InstructBlipCaptioner.FromPretrained(resolved, device, dtype, progress, batching: batching, quantization: quantization),
            ModelFamily.Idefics => Idefics.IdeficsPipeline.FromPretrained(resolved, device, dtype, progress, batching: batching, quantization: quantization),
            ModelFamily.OpenFlamingo => Flamingo.FlamingoPipeline.FromPretrained(resolved, device, dtype, progress, batching: batching, quantization: quantization),
            _ => throw new ConfigException(Path.Combine(resolved, "config.json"),
                "this is a BLIP-2 retrieval model (Blip2ForImageTextRetrieval): it gives embeddings and match scores, not text; load it with Blip2Retriever."),
        };
    }

    /// <summary>Loads <paramref name="sourceFolder"/> with its language model quantized and writes a folder that loads already
    /// quantized (config.json gains a <c>quantization_config</c>; model.safetensors holds the integers and scales): later
    /// starts map it instead of quantizing again, and give the same ids.</summary>
    /// <param name="sourceFolder">a checkpoint folder of any generative family, or a hub id in the local cache.</param>
    /// <param name="targetFolder">a new or empty folder; written in full or not at all.</param>
    /// <param name="quantization">Int8 or Int4.</param>
    /// <param name="progress">receives the load's reports.</param>
    /// <exception cref="ArgumentException"><paramref name="quantization"/> is None.</exception>
    /// <exception cref="IOException">the target folder holds files already.</exception>
    public static void SaveQuantized(string sourceFolder, string targetFolder, WeightQuantization quantization, IProgress<LoadProgress>? progress = null)
    {
        var config = QuantizationConfig.For(quantization) ?? throw new ArgumentException("Choose Int8 or Int4 to save a quantized copy.", nameof(quantization));
        string resolved = HubCache.Resolve(sourceFolder);
        using var model = FromPretrained(resolved, progress: progress, quantization: quantization);
        var (module, tied) = model switch
        {
            Blip2Captioner b => ((nn.Module)b.Model, Blip2KeyMap.For(b.Model.Config).Tied.Keys),
            InstructBlipCaptioner i => (i.Model, Blip2KeyMap.ForLanguageModel(i.Model.Config.TextConfig).Tied.Keys),
            Flamingo.FlamingoPipeline f => (f.Model, Flamingo.FlamingoModel.KeyMap(f.Model.Config).Tied.Keys),
            Idefics.IdeficsPipeline p => (p.Model, Idefics.IdeficsKeyMap.Map.Tied.Keys),
            _ => throw new NotSupportedException($"{model.GetType().Name} cannot be saved quantized."),
        };
        QuantizedCheckpoint.Write(module, tied, resolved, targetFolder, config);
    }
}
