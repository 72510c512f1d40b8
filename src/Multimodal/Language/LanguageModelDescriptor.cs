using Multimodal.Common;

namespace Multimodal.Language;

/// <summary>The special ids a language model's config gives generation: the BOS a decoder-only wrapper puts in front
/// of its new tokens, the end token, and the pad that fills ended rows; null where the config names none.</summary>
internal readonly record struct SpecialTokens(long? Bos, long? Eos, long? Pad);

/// <summary>Everything a multimodal wrapper needs to know about one language model, looked up by <c>model_type</c>:
/// this project's <c>AutoModelForCausalLM</c> / <c>AutoModelForSeq2SeqLM</c> entry. BLIP-2, InstructBLIP, OpenFlamingo
/// and the plain-folder loader ask the descriptor instead of testing config types, so a language model is added in its
/// own folder under <c>Language/</c> plus one line in <see cref="LanguageModels"/>.</summary>
/// <remarks>Keys are relative to the language model (<c>lm_head.weight</c>); a wrapper adds its own prefix.</remarks>
internal abstract class LanguageModelDescriptor
{
    /// <summary>The upstream <c>model_type</c> this entry reads.</summary>
    public abstract string ModelType { get; }

    /// <summary>The record <c>model_type</c> deserializes to.</summary>
    public abstract Type ConfigType { get; }

    /// <summary>The upstream class built, for messages.</summary>
    public abstract string ClassName { get; }

    /// <summary>An encoder-decoder (T5) rather than a decoder-only model.</summary>
    public virtual bool IsEncoderDecoder => false;

    /// <summary>Where the decoder layers live (<c>model.layers.</c>), which Flamingo wraps; null when the model cannot be
    /// wrapped.</summary>
    public abstract string? LayersPath { get; }

    /// <summary>The input embedding table's key.</summary>
    public abstract string EmbeddingKey { get; }

    /// <summary>The output head's key.</summary>
    public abstract string HeadKey { get; }

    /// <summary>Published names that differ from the module's (one literal table, as data); empty for transformers layouts.</summary>
    public virtual IReadOnlyList<(string Published, string Model)> Renames => [];

    /// <summary>The config with upstream's constructor derivations applied (and legacy forms converted).</summary>
    public virtual TextConfig Normalize(TextConfig config) => config;

    /// <summary>Checks every size the model is built from, naming each key under <paramref name="prefix"/>
    /// (<c>text_config.</c>), and refuses what is not implemented; nothing is allocated.</summary>
    public abstract void Validate(TextConfig config, ConfigChecks checks, string prefix);

    /// <summary>Width of the hidden states (what a projection into the model must produce).</summary>
    public abstract int HiddenSize(TextConfig config);

    /// <summary>Rows of the embedding table.</summary>
    public abstract int VocabSize(TextConfig config);

    /// <summary>The config with <paramref name="vocab"/> rows (OpenFlamingo resizes to its extended tokenizer).</summary>
    public abstract TextConfig WithVocabSize(TextConfig config, int vocab);

    /// <summary>Generation's special ids from the config.</summary>
    public abstract SpecialTokens Tokens(TextConfig config);

    /// <summary>Whether the head shares the embedding table.</summary>
    public abstract bool TiesWordEmbeddings(TextConfig config);

    /// <summary>Tied keys (derived → source), relative to the model: what <c>save_pretrained</c> leaves out.</summary>
    public virtual IReadOnlyDictionary<string, string> TiedKeys(TextConfig config) =>
        TiesWordEmbeddings(config) ? new Dictionary<string, string> { [HeadKey] = EmbeddingKey } : new Dictionary<string, string>();

    /// <summary>The most new tokens a prompt of <paramref name="promptPositions"/> positions leaves room for, where
    /// the model has a position table (OPT's learned positions); null where it has none.</summary>
    public virtual int? NewTokenBudget(TextConfig config, int promptPositions) => null;

    /// <summary>Builds the model (weights to be loaded); <paramref name="wrapLayer"/> wraps each decoder layer
    /// (Flamingo), and is refused where <see cref="LayersPath"/> is null.</summary>
    public abstract nn.Module Build(TextConfig config, Device device, ScalarType dtype, Func<int, nn.Module, nn.Module>? wrapLayer = null);
}

/// <summary>A descriptor over one config record: the members take the typed config.</summary>
internal abstract class LanguageModelDescriptor<TConfig> : LanguageModelDescriptor where TConfig : TextConfig
{
    /// <inheritdoc/>
    public sealed override Type ConfigType => typeof(TConfig);

    /// <summary>The typed config; a config of another model type is a caller's mistake.</summary>
    protected TConfig Typed(TextConfig config) => config as TConfig
        ?? throw new ArgumentException($"A {config.GetType().Name} (model_type \"{config.ModelType}\") was given to the {ModelType} descriptor.");

    /// <inheritdoc/>
    public sealed override void Validate(TextConfig config, ConfigChecks checks, string prefix) => Validate(Typed(config), checks, prefix);
    /// <inheritdoc/>
    public sealed override int HiddenSize(TextConfig config) => HiddenSize(Typed(config));
    /// <inheritdoc/>
    public sealed override int VocabSize(TextConfig config) => VocabSize(Typed(config));
    /// <inheritdoc/>
    public sealed override TextConfig WithVocabSize(TextConfig config, int vocab) => WithVocabSize(Typed(config), vocab);
    /// <inheritdoc/>
    public sealed override SpecialTokens Tokens(TextConfig config) => Tokens(Typed(config));
    /// <inheritdoc/>
    public sealed override bool TiesWordEmbeddings(TextConfig config) => TiesWordEmbeddings(Typed(config));
    /// <inheritdoc/>
    public sealed override nn.Module Build(TextConfig config, Device device, ScalarType dtype, Func<int, nn.Module, nn.Module>? wrapLayer = null)
    {
        if (wrapLayer is not null && LayersPath is null)
            throw new NotSupportedException($"{ClassName} ({ModelType}) cannot have its decoder layers wrapped (Flamingo needs a decoder-only model).");
        return Build(Typed(config), device, dtype, wrapLayer);
    }

    /// <summary><see cref="Validate(TextConfig, ConfigChecks, string)"/> on the typed config.</summary>
    protected abstract void Validate(TConfig config, ConfigChecks checks, string prefix);
    /// <summary><see cref="HiddenSize(TextConfig)"/> on the typed config.</summary>
    protected abstract int HiddenSize(TConfig config);
    /// <summary><see cref="VocabSize(TextConfig)"/> on the typed config.</summary>
    protected abstract int VocabSize(TConfig config);
    /// <summary><see cref="WithVocabSize(TextConfig, int)"/> on the typed config.</summary>
    protected abstract TConfig WithVocabSize(TConfig config, int vocab);
    /// <summary><see cref="Tokens(TextConfig)"/> on the typed config.</summary>
    protected abstract SpecialTokens Tokens(TConfig config);
    /// <summary><see cref="TiesWordEmbeddings(TextConfig)"/> on the typed config.</summary>
    protected abstract bool TiesWordEmbeddings(TConfig config);
    /// <summary><see cref="Build(TextConfig, Device, ScalarType, Func{int, nn.Module, nn.Module}?)"/> on the typed config.</summary>
    protected abstract nn.Module Build(TConfig config, Device device, ScalarType dtype, Func<int, nn.Module, nn.Module>? wrapLayer);
}
