using System.Text.Json.Serialization;

namespace Multimodal.Language.Mpt;

/// <summary>The config of MosaicML's older <c>mosaic_gpt</c> remote code, which MPT-1B-redpajama-200b (the
/// language model of OpenFlamingo-3B) ships instead of transformers' <c>mpt</c>. Converted to
/// <see cref="MptConfig"/>: the maths is MPT's; only names differ.</summary>
public sealed record MosaicGptConfig : TextConfig
{
    /// <inheritdoc/>
    public override string ModelType { get; init; } = "mosaic_gpt";

    /// <inheritdoc/>
    [JsonIgnore] public override bool IsDecoderOnly => true;

    /// <summary><c>d_model</c> (default 2048): Width.</summary>
    public int DModel { get; init; } = 2048;
    /// <summary><c>n_heads</c> (default 16): Heads.</summary>
    public int NHeads { get; init; } = 16;
    /// <summary><c>n_layers</c> (default 24): Layers.</summary>
    public int NLayers { get; init; } = 24;
    /// <summary>MLP width / width (MPT's <c>expansion_ratio</c>).</summary>
    public int MlpRatio { get; init; } = 4;
    /// <summary><c>max_seq_len</c> (default 2048): ALiBi table length.</summary>
    public int MaxSeqLen { get; init; } = 2048;
    /// <summary><c>vocab_size</c> (default 50432): Vocabulary.</summary>
    public int VocabSize { get; init; } = 50432;
    /// <summary>Must be true: only the ALiBi variant is supported.</summary>
    public bool Alibi { get; init; } = true;
    /// <summary><c>alibi_bias_max</c> (default 8): ALiBi's maximum bias exponent.</summary>
    public double AlibiBiasMax { get; init; } = 8;
    /// <summary>mosaic_gpt's <c>nn.Linear</c> and LayerNorm layers have biases unless this says otherwise.</summary>
    public bool NoBias { get; init; }
    /// <summary><c>layer_norm_epsilon</c> (default 1e-5): LayerNorm epsilon.</summary>
    public double LayerNormEpsilon { get; init; } = 1e-5;

    /// <summary>The same model as an <see cref="MptConfig"/>.</summary>
    public MptConfig ToMpt()
    {
        if (!Alibi) throw new NotSupportedException("mosaic_gpt with alibi = false (learned positions) is not supported.");
        var attn = System.Text.Json.JsonSerializer.SerializeToElement(new { alibi = true, alibi_bias_max = AlibiBiasMax });
        return new MptConfig
        {
            DModel = DModel, NHeads = NHeads, NLayers = NLayers, ExpansionRatio = MlpRatio, FfnWidth = MlpRatio * DModel, MaxSeqLen = MaxSeqLen,
            VocabSize = VocabSize, NoBias = NoBias, LayerNormEpsilon = LayerNormEpsilon, AttnConfig = attn,
        };
    }

    /// <summary>mosaic_gpt parameter names → transformers MPT names, written from mosaic_gpt's modeling code
    /// (<c>GPTBlock</c>: <c>ln_1</c>, <c>attn.Wqkv</c>, <c>attn.out_proj</c>, <c>ln_2</c>, <c>mlp.mlp_up</c>,
    /// <c>mlp.mlp_down</c>; <c>MosaicGPT</c>: <c>transformer.wte</c>, <c>transformer.ln_f</c>).</summary>
    public static readonly IReadOnlyList<(string Published, string Model)> RenameTable =
    [
        ("transformer.blocks.*.ln_1.weight", "transformer.blocks.*.norm_1.weight"),
        ("transformer.blocks.*.ln_1.bias", "transformer.blocks.*.norm_1.bias"),
        ("transformer.blocks.*.ln_2.weight", "transformer.blocks.*.norm_2.weight"),
        ("transformer.blocks.*.ln_2.bias", "transformer.blocks.*.norm_2.bias"),
        ("transformer.blocks.*.mlp.mlp_up.weight", "transformer.blocks.*.ffn.up_proj.weight"),
        ("transformer.blocks.*.mlp.mlp_up.bias", "transformer.blocks.*.ffn.up_proj.bias"),
        ("transformer.blocks.*.mlp.mlp_down.weight", "transformer.blocks.*.ffn.down_proj.weight"),
        ("transformer.blocks.*.mlp.mlp_down.bias", "transformer.blocks.*.ffn.down_proj.bias"),
        ("transformer.ln_f.weight", "transformer.norm_f.weight"),
        ("transformer.ln_f.bias", "transformer.norm_f.bias"),
    ];
}
