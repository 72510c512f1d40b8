
namespace Multimodal.Vision;

/// <summary>The two outputs of <see cref="Blip2VisionModel"/>.</summary>
/// <param name="LastHiddenState">(B, 1 + patches, D), after <c>post_layernorm</c>.</param>
/// <param name="PoolerOutput">(B, D): <c>post_layernorm</c> applied a second time to the CLS row, as upstream does.</param>
internal sealed record VisionOutput(Tensor LastHiddenState, Tensor PoolerOutput);

/// <summary>transformers v4.45.1 <c>Blip2Encoder</c>: the stack of <see cref="Blip2EncoderLayer"/>s.</summary>
internal sealed class Blip2Encoder : nn.Module<Tensor, Tensor>
{
    [ComponentName(Name = "layers")] private readonly ModuleList<Blip2EncoderLayer> _layers = new();

    public Blip2Encoder(Blip2VisionConfig config, Device? device = null, ScalarType? dtype = null)
        : base(nameof(Blip2Encoder))
    {
        for (int i = 0; i < config.NumHiddenLayers; i++) _layers.Add(new Blip2EncoderLayer(config, device, dtype));
        RegisterComponents();
    }

    public override Tensor forward(Tensor hidden)
    {
        using var scope = NewDisposeScope();
        foreach (var layer in _layers) hidden = layer.forward(hidden);
        return hidden.MoveToOuterDisposeScope();
    }
}

/// <summary>transformers v4.45.1 <c>Blip2VisionModel</c> (modeling_blip_2.py), the frozen EVA ViT-g of
/// BLIP-2 (Fang et al. 2022; Li et al. 2023). (B, 3, H, W) → (B, 1 + patches, D) and (B, D).</summary>
internal sealed class Blip2VisionModel : nn.Module<Tensor, VisionOutput>
{
    [ComponentName(Name = "embeddings")] private readonly Blip2VisionEmbeddings _embeddings;
    [ComponentName(Name = "encoder")] private readonly Blip2Encoder _encoder;
    [ComponentName(Name = "post_layernorm")] private readonly LayerNorm _postLayernorm;

    public Blip2VisionModel(Blip2VisionConfig config, Device? device = null, ScalarType? dtype = null)
        : base(nameof(Blip2VisionModel))
    {
        _embeddings = new Blip2VisionEmbeddings(config, device, dtype);
        _encoder = new Blip2Encoder(config, device, dtype);
        _postLayernorm = nn.LayerNorm(config.HiddenSize, config.LayerNormEps, device: device, dtype: dtype);
        RegisterComponents();
    }

    public override VisionOutput forward(Tensor pixelValues)
    {
        using var scope = NewDisposeScope();
        var last = _postLayernorm.forward(_encoder.forward(_embeddings.forward(pixelValues)));
        var pooled = _postLayernorm.forward(last[.., 0, ..]);
        return new VisionOutput(last.MoveToOuterDisposeScope(), pooled.MoveToOuterDisposeScope());
    }
}
