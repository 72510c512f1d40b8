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
        var (map, name) = KeyMap(config, checkpoint.ConfigPath);
        var model = StateDictLoader.BuildAndLoad(d => Build(config, DeviceCheck.Resolve(d), DeviceCheck.Resolve(dtype)), device, checkpoint, map, name);
        model.eval();
        return model;
    }

    // The config's key map and class name, after checking the config (nothing is built).
    private static (WeightMap Map, string ModelName) KeyMap(TextConfig config, string source)
    {
        switch (config)
        {
            case MptConfig mpt:
                mpt.Validate(source);
                return (new WeightMap
                {
                    Tied = mpt.TieWordEmbeddings ? new Dictionary<string, string> { ["lm_head.weight"] = "transformer.wte.weight" } : new Dictionary<string, string>(),
                }, nameof(MptForCausalLM));
            case MosaicGptConfig mosaic:
                mosaic.ToMpt().Validate(source);
                return (MosaicGptConfig.KeyMap(tied: true), nameof(MptForCausalLM));
            case GptNeoX.GptNeoXConfig neox:
                neox.Validate(source);
                return (new WeightMap
                {
                    Tied = neox.TieWordEmbeddings ? new Dictionary<string, string> { ["embed_out.weight"] = "gpt_neox.embed_in.weight" } : new Dictionary<string, string>(),
                }, nameof(GptNeoX.GptNeoXForCausalLM));
            default:
                throw new NotSupportedException($"{source}: model_type \"{config.ModelType}\" is not supported as a causal language model.");
        }
    }

    private static nn.Module Build(TextConfig config, Device device, ScalarType dtype) => config switch
    {
        MptConfig mpt => new MptForCausalLM(mpt, device, dtype),
        MosaicGptConfig mosaic => new MptForCausalLM(mosaic.ToMpt(), device, dtype),
        GptNeoX.GptNeoXConfig neox => new GptNeoX.GptNeoXForCausalLM(neox, device, dtype),
        _ => throw new NotSupportedException($"model_type \"{config.ModelType}\" is not supported as a causal language model."),
    };
}
