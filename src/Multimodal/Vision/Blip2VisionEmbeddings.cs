using Multimodal.Common;

namespace Multimodal.Vision;

/// <summary>transformers v4.45.1 <c>Blip2VisionEmbeddings</c> (modeling_blip_2.py): patch convolution,
/// class token and learned positions. (B, 3, H, W) → (B, 1 + (H/p)·(W/p), D).</summary>
internal sealed class Blip2VisionEmbeddings : nn.Module<Tensor, Tensor>
{
    [ComponentName(Name = "class_embedding")] private readonly Parameter _classEmbedding;
    [ComponentName(Name = "patch_embedding")] private readonly Conv2d _patchEmbedding;
    [ComponentName(Name = "position_embedding")] private readonly Parameter _positionEmbedding;
    private readonly Blip2VisionConfig _config;

    public Blip2VisionEmbeddings(Blip2VisionConfig config, Device? device = null, ScalarType? dtype = null)
        : base(nameof(Blip2VisionEmbeddings))
    {
        _config = config;
        int d = config.HiddenSize;
        long positions = (long)config.PatchesPerSide * config.PatchesPerSide + 1;
        _classEmbedding = new Parameter(zeros(1, 1, d, dtype: dtype, device: device), requires_grad: false);
        _patchEmbedding = nn.Conv2d(3, d, config.PatchSize, stride: config.PatchSize, device: device, dtype: dtype);
        _positionEmbedding = new Parameter(zeros(1, positions, d, dtype: dtype, device: device), requires_grad: false);
        RegisterComponents();
    }

    public override Tensor forward(Tensor pixelValues)
    {
        Shape.Require(pixelValues, "pixel_values", -1, 3, _config.ImageSize, _config.ImageSize);
        using var scope = NewDisposeScope();
        long b = pixelValues.size(0);
        var patches = _patchEmbedding.forward(pixelValues.to(_patchEmbedding.weight!.dtype)) // (B, D, h, w)
            .flatten(2).transpose(1, 2);                                                       // (B, h·w, D)
        var cls = _classEmbedding.expand(b, 1, -1);
        var embeddings = cat([cls, patches], 1).Plus(_positionEmbedding);
        return embeddings.MoveToOuterDisposeScope();
    }
}
