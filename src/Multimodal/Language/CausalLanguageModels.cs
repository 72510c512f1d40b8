using Multimodal.Common;
using Multimodal.Generation;
using Multimodal.Loading;

namespace Multimodal.Language;

/// <summary>Loads a plain transformers causal-LM folder (<c>config.json</c> + weights) by its <c>model_type</c>
/// (<c>AutoModelForCausalLM.from_pretrained</c>), and runs a loaded one as upstream's plain <c>forward()</c>.</summary>
internal static class CausalLanguageModels
{
    public static nn.Module FromPretrained(string folder, Device? device = null, ScalarType? dtype = null)
    {
        using var checkpoint = CheckpointFolder.Open(folder);
        var read = PretrainedConfig.Read<TextConfig>(checkpoint.ConfigPath);
        var descriptor = LanguageModels.For(read);
        if (descriptor.IsEncoderDecoder)
            throw new NotSupportedException($"{checkpoint.ConfigPath}: model_type \"{read.ModelType}\" is an encoder-decoder, not a causal language model.");
        var checks = new ConfigChecks(checkpoint.ConfigPath);
        descriptor.Validate(read, checks, "");
        checks.ThrowIfAny();
        var config = descriptor.Normalize(read);
        var map = new WeightMap { Renames = descriptor.Renames, Tied = descriptor.TiedKeys(read) };
        var model = StateDictLoader.BuildAndLoad(d => descriptor.Build(config, DeviceCheck.Resolve(d), DeviceCheck.Resolve(dtype)),
            device, checkpoint, map, descriptor.ClassName);
        model.eval();
        return model;
    }

    /// <summary>Logits as upstream's plain <c>forward()</c> computes them: positions past … past + T − 1 where the model
    /// takes positions (generation derives them from the mask instead).</summary>
    public static Tensor ForwardLogits(nn.Module model, Tensor inputsEmbeds, Tensor attentionMask) => model switch
    {
        IFlamingoHost host => host.Forward(inputsEmbeds, attentionMask, null, null, positionsFromMask: false),
        ICausalLanguageModel causal => causal.Forward(inputsEmbeds, attentionMask, null),
        _ => throw new ArgumentException($"{model.GetName()} is not a causal language model.", nameof(model)),
    };
}
