using Microsoft.Extensions.AI;
using Multimodal.Blip2;
using Multimodal.Common;
using Multimodal.Generation;
using Multimodal.InstructBlip;
using Multimodal.Loading;
using Multimodal.Processing;

namespace Multimodal;

/// <summary>What every single-image family's façade offers (<see cref="Blip2Captioner"/>, <see cref="InstructBlipCaptioner"/>),
/// so code can load any of them with <see cref="VisionLanguageModel.FromPretrained"/> and use it the same way.</summary>
public interface IVisionLanguageModel : IDisposable
{
    /// <summary>Captions an image (the family's own captioning prompt).</summary>
    Task<TextResult> CaptionAsync(DecodedImage image, GenerationOptions? options = null, CancellationToken cancellationToken = default);

    /// <summary>Answers a question about an image, in the family's prompt format.</summary>
    Task<TextResult> AskAsync(DecodedImage image, string question, GenerationOptions? options = null, CancellationToken cancellationToken = default);

    /// <summary>Streams the caption (<paramref name="question"/> null) or the answer; the last chunk carries the whole result.</summary>
    IAsyncEnumerable<TextChunk> StreamAsync(DecodedImage image, string? question, GenerationOptions? options = null, CancellationToken cancellationToken = default);

    /// <summary>The model as a <see cref="IChatClient"/> (the façade keeps owning the model).</summary>
    IChatClient AsChatClient(string? modelId = null);
}

/// <summary>Loads a single-image vision-language checkpoint whatever its family, chosen by <c>model_type</c> in config.json.</summary>
public static class VisionLanguageModel
{
    /// <summary>"blip-2" → <see cref="Blip2Captioner"/>, "instructblip" → <see cref="InstructBlipCaptioner"/>.</summary>
    /// <param name="folder">a checkpoint folder, or a hub id in the local Hugging Face cache.</param>
    /// <param name="device">CPU (default) or CUDA.</param>
    /// <param name="dtype">Float32 (default), Float16 or BFloat16.</param>
    /// <param name="progress">receives a report after each weight tensor.</param>
    /// <param name="revision">with a hub id: the branch, tag or commit (default main).</param>
    /// <exception cref="ConfigException">config.json is missing <c>model_type</c> or names another kind of model (the
    /// message says which class loads it).</exception>
    public static IVisionLanguageModel FromPretrained(string folder, Device? device = null, ScalarType? dtype = null,
        IProgress<LoadProgress>? progress = null, string? revision = null)
    {
        string resolved = HubCache.Resolve(folder, revision);
        string config = Path.Combine(resolved, "config.json");
        string? modelType = PretrainedConfig.ReadModelType(config);
        return modelType switch
        {
            "blip-2" => Blip2Captioner.FromPretrained(resolved, device, dtype, progress),
            "instructblip" => InstructBlipCaptioner.FromPretrained(resolved, device, dtype, progress),
            "idefics" => throw new ConfigException(config, "model_type is \"idefics\": IDEFICS reads interleaved images and text; load it with IdeficsPipeline."),
            null => throw new ConfigException(config, "there is no model_type; expected \"blip-2\" or \"instructblip\" (an OpenFlamingo folder loads with FlamingoPipeline)."),
            _ => throw new ConfigException(config, $"model_type is \"{modelType}\"; single-image models are \"blip-2\" and \"instructblip\"."),
        };
    }
}
