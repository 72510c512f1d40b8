using Multimodal.Common;
using Multimodal.Idefics;

namespace Multimodal.Vision;

/// <summary>transformers v4.44.2 <c>IdeficsVisionEmbeddings</c> (vision.py, CLIP's): patch convolution
/// without bias, class token, learned positions (an <c>Embedding</c>).</summary>
internal sealed class IdeficsVisionEmbeddings : nn.Module<Tensor, Tensor>
{
    [ComponentName(Name = "class_embedding")] private readonly Parameter _classEmbedding;
    [ComponentName(Name = "patch_embedding")] private readonly Conv2d _patchEmbedding;
    [ComponentName(Name = "position_embedding")] private readonly EmbeddingTable _positionEmbedding;

    public IdeficsVisionEmbeddings(IdeficsVisionConfig config, Device? device, ScalarType? dtype) : base(nameof(IdeficsVisionEmbeddings))
    {
        int grid = config.ImageSize / config.PatchSize;
        _classEmbedding = new Parameter(zeros(config.EmbedDim, dtype: dtype, device: device), requires_grad: false);
        _patchEmbedding = nn.Conv2d(config.NumChannels, config.EmbedDim, config.PatchSize, stride: config.PatchSize, bias: false, device: device, dtype: dtype);
        _positionEmbedding = new EmbeddingTable(grid * grid + 1, config.EmbedDim, device: device, dtype: dtype);
        RegisterComponents();
    }

    public override Tensor forward(Tensor pixels)
    {
        using var scope = NewDisposeScope();
        long b = pixels.shape[0];
        var patches = _patchEmbedding.forward(pixels.to(_patchEmbedding.weight!.dtype)).flatten(2).transpose(1, 2); // (B, grid², D)
        var x = cat([_classEmbedding.view(1, 1, -1).expand(b, 1, -1), patches], 1);                                   // (B, 1 + grid², D)
        return (x + _positionEmbedding.weight!.narrow(0, 0, x.shape[1])).MoveToOuterDisposeScope();
    }
}

/// <summary>transformers v4.44.2 <c>IdeficsVisionAttention</c> (CLIP attention): q/k/v/out projections
/// with biases, bidirectional.</summary>
internal sealed class IdeficsVisionAttention : nn.Module<Tensor, Tensor>
{
    [ComponentName(Name = "k_proj")] private readonly Linear _kProj;
    [ComponentName(Name = "v_proj")] private readonly Linear _vProj;
    [ComponentName(Name = "q_proj")] private readonly Linear _qProj;
    [ComponentName(Name = "out_proj")] private readonly Linear _outProj;
    private readonly int _heads;

    public IdeficsVisionAttention(IdeficsVisionConfig config, Device? device, ScalarType? dtype) : base(nameof(IdeficsVisionAttention))
    {
        _heads = config.NumAttentionHeads;
        int d = config.EmbedDim;
        _kProj = nn.Linear(d, d, device: device, dtype: dtype);
        _vProj = nn.Linear(d, d, device: device, dtype: dtype);
        _qProj = nn.Linear(d, d, device: device, dtype: dtype);
        _outProj = nn.Linear(d, d, device: device, dtype: dtype);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var q = Attention.SplitHeads(_qProj.forward(x), _heads);
        var k = Attention.SplitHeads(_kProj.forward(x), _heads);
        var v = Attention.SplitHeads(_vProj.forward(x), _heads);
        return _outProj.forward(Attention.MergeHeads(Attention.ScaledDotProduct(q, k, v, null))).MoveToOuterDisposeScope();
    }
}

/// <summary>transformers v4.44.2 <c>IdeficsVisionEncoderLayer</c> (CLIP's): pre-LN attention and MLP.</summary>
internal sealed class IdeficsVisionEncoderLayer : nn.Module<Tensor, Tensor>
{
    [ComponentName(Name = "self_attn")] private readonly IdeficsVisionAttention _selfAttn;
    [ComponentName(Name = "layer_norm1")] private readonly LayerNorm _layerNorm1;
    [ComponentName(Name = "mlp")] private readonly Sequential _mlp;
    [ComponentName(Name = "layer_norm2")] private readonly LayerNorm _layerNorm2;
    private readonly Func<Tensor, Tensor> _activation;

    public IdeficsVisionEncoderLayer(IdeficsVisionConfig config, Device? device, ScalarType? dtype) : base(nameof(IdeficsVisionEncoderLayer))
    {
        _activation = Activations.Get(config.HiddenAct, "vision_config.hidden_act");
        _selfAttn = new IdeficsVisionAttention(config, device, dtype);
        _layerNorm1 = nn.LayerNorm(config.EmbedDim, config.LayerNormEps, device: device, dtype: dtype);
        _mlp = nn.Sequential(
            ("fc1", nn.Linear(config.EmbedDim, config.IntermediateSize, device: device, dtype: dtype)),
            ("fc2", nn.Linear(config.IntermediateSize, config.EmbedDim, device: device, dtype: dtype)));
        _layerNorm2 = nn.LayerNorm(config.EmbedDim, config.LayerNormEps, device: device, dtype: dtype);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        x = x + _selfAttn.forward(_layerNorm1.forward(x));
        var h = _layerNorm2.forward(x);
        var fc1 = (Linear)_mlp[0];
        var fc2 = (Linear)_mlp[1];
        x = x + fc2.forward(_activation(fc1.forward(h)));
        return x.MoveToOuterDisposeScope();
    }
}

/// <summary>transformers v4.44.2 <c>IdeficsVisionTransformer</c> (vision.py), a CLIP ViT: embeddings,
/// <c>pre_layrnorm</c> (sic), the encoder and <c>post_layernorm</c>. IDEFICS feeds the perceiver the
/// encoder output WITHOUT <c>post_layernorm</c> (which only makes the unused pooled output).
/// (B, 3, H, W) → (B, 1 + patches, D).</summary>
internal sealed class IdeficsVisionTransformer : nn.Module<Tensor, Tensor>
{
    [ComponentName(Name = "embeddings")] private readonly IdeficsVisionEmbeddings _embeddings;
    [ComponentName(Name = "pre_layrnorm")] private readonly LayerNorm _preLayrnorm;
    [ComponentName(Name = "encoder")] private readonly IdeficsVisionEncoder _encoder;
    [ComponentName(Name = "post_layernorm")] private readonly LayerNorm _postLayernorm;
    private readonly IdeficsVisionConfig _config;

    public IdeficsVisionTransformer(IdeficsVisionConfig config, Device? device = null, ScalarType? dtype = null) : base(nameof(IdeficsVisionTransformer))
    {
        _config = config;
        _embeddings = new IdeficsVisionEmbeddings(config, device, dtype);
        _preLayrnorm = nn.LayerNorm(config.EmbedDim, config.LayerNormEps, device: device, dtype: dtype);
        _encoder = new IdeficsVisionEncoder(config, device, dtype);
        _postLayernorm = nn.LayerNorm(config.EmbedDim, config.LayerNormEps, device: device, dtype: dtype);
        RegisterComponents();
    }

    public override Tensor forward(Tensor pixels)
    {
        Shape.Require(pixels, "pixel_values image", -1, _config.NumChannels, _config.ImageSize, _config.ImageSize);
        using var scope = NewDisposeScope();
        return _encoder.forward(_preLayrnorm.forward(_embeddings.forward(pixels))).MoveToOuterDisposeScope();
    }

    private sealed class IdeficsVisionEncoder : nn.Module<Tensor, Tensor>
    {
        [ComponentName(Name = "layers")] private readonly ModuleList<IdeficsVisionEncoderLayer> _layers = new();

        public IdeficsVisionEncoder(IdeficsVisionConfig config, Device? device, ScalarType? dtype) : base(nameof(IdeficsVisionEncoder))
        {
            for (int i = 0; i < config.NumHiddenLayers; i++) _layers.Add(new IdeficsVisionEncoderLayer(config, device, dtype));
            RegisterComponents();
        }

        public override Tensor forward(Tensor x)
        {
            using var scope = NewDisposeScope();
            foreach (var layer in _layers) x = layer.forward(x);
            return x.MoveToOuterDisposeScope();
        }
    }
}
