using Multimodal.Common;
using Multimodal.Language.Mpt;
using Multimodal.Loading;

namespace Multimodal.Language;

/// <summary>Loads a plain transformers causal-LM folder (<c>config.json</c> + safetensors) by its <c>model_type</c>.</summary>
internal static class CausalLanguageModels
{
    public static nn.Module FromPretrained(string folder, Device? device = null, ScalarType? dtype = null)
    {
        using var checkpoint = CheckpointFolder.Open(folder);
        var config = PretrainedConfig.Read<TextConfig>(checkpoint.ConfigPath);
        // The key map depends on the config only; the meta-device build that yields it costs no memory.
        var (probe, map) = Create(config, checkpoint.ConfigPath, META, DeviceCheck.Resolve(dtype));
        string modelName = probe.GetType().Name;
        probe.Dispose();
        var model = StateDictLoader.BuildAndLoad(d => Create(config, checkpoint.ConfigPath, DeviceCheck.Resolve(d), DeviceCheck.Resolve(dtype)).Model,
            device, checkpoint, map, modelName);
        model.eval();
        return model;
    }

    private static (nn.Module Model, WeightMap Map) Create(TextConfig config, string source, Device device, ScalarType dtype)
    {
        switch (config)
        {
            case MptConfig mpt:
                mpt.Validate(source);
                return (new MptForCausalLM(mpt, device, dtype), new WeightMap
                {
                    Tied = mpt.TieWordEmbeddings ? new Dictionary<string, string> { ["lm_head.weight"] = "transformer.wte.weight" } : new Dictionary<string, string>(),
                });
            case MosaicGptConfig mosaic:
                mosaic.ToMpt().Validate(source);
                return (new MptForCausalLM(mosaic.ToMpt(), device, dtype), MosaicGptConfig.KeyMap(tied: true));
            case GptNeoX.GptNeoXConfig neox:
                neox.Validate(source);
                return (new GptNeoX.GptNeoXForCausalLM(neox, device, dtype), new WeightMap
                {
                    Tied = neox.TieWordEmbeddings ? new Dictionary<string, string> { ["embed_out.weight"] = "gpt_neox.embed_in.weight" } : new Dictionary<string, string>(),
                });
            default:
                throw new NotSupportedException($"{source}: model_type \"{config.ModelType}\" is not supported as a causal language model.");
        }
    }
}
