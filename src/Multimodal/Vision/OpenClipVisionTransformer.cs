using System.Text.Json.Serialization;
using Multimodal.Common;

namespace Multimodal.Vision;

/// <summary>open_clip v2.20 vision tower settings (<c>model_cfg.vision_cfg</c> of an open_clip model
/// config, e.g. ViT-L-14's: width 1024, 24 layers, head width 64, patch 14, image 224).</summary>
public sealed record OpenClipVisionConfig
{
    /// <summary>Input resolution.</summary>
    public int ImageSize { get; init; } = 224;
    /// <summary>Transformer layers.</summary>
    public int Layers { get; init; } = 12;
    /// <summary>Width.</summary>
    public int Width { get; init; } = 768;
    /// <summary>Width of one attention head.</summary>
    public int HeadWidth { get; init; } = 64;
    /// <summary>MLP width / width.</summary>
    public double MlpRatio { get; init; } = 4.0;
    /// <summary>Patch size.</summary>
    public int PatchSize { get; init; } = 16;
    /// <summary>Output width of <c>proj</c> (the CLIP embedding); set from <c>embed_dim</c>.</summary>
    [JsonIgnore] public int OutputDim { get; init; } = 512;
    /// <summary>QuickGELU (OpenAI weights) instead of exact GELU.</summary>
    [JsonIgnore] public bool QuickGelu { get; init; }
    /// <summary>Other keys (layer scale, attention pooling...); refused when they change the maths.</summary>
    [JsonExtensionData] public Dictionary<string, System.Text.Json.JsonElement>? Unbound { get; init; }
}

/// <summary>open_clip v2.20 <c>ResidualAttentionBlock</c> (transformer.py): pre-LN
/// <c>nn.MultiheadAttention</c> (fused <c>in_proj</c>) and an MLP <c>c_fc</c> → GELU/QuickGELU → <c>c_proj</c>.</summary>
internal sealed class OpenClipResidualAttentionBlock : nn.Module<Tensor, Tensor>
{
    [ComponentName(Name = "ln_1")] private readonly LayerNorm _ln1;
    [ComponentName(Name = "attn")] private readonly OpenClipAttention _attn;
    [ComponentName(Name = "ln_2")] private readonly LayerNorm _ln2;
    [ComponentName(Name = "mlp")] private readonly Sequential _mlp;

    public OpenClipResidualAttentionBlock(OpenClipVisionConfig config, Device? device, ScalarType? dtype) : base(nameof(OpenClipResidualAttentionBlock))
    {
        int width = config.Width, inner = (int)(width * config.MlpRatio);
        _ln1 = nn.LayerNorm(width, 1e-5, device: device, dtype: dtype);
        _attn = new OpenClipAttention(width, width / config.HeadWidth, device, dtype);
        _ln2 = nn.LayerNorm(width, 1e-5, device: device, dtype: dtype);
        nn.Module<Tensor, Tensor> act = config.QuickGelu ? new QuickGelu() : nn.GELU();
        _mlp = nn.Sequential(
            ("c_fc", nn.Linear(width, inner, device: device, dtype: dtype)),
            ("gelu", act),
            ("c_proj", nn.Linear(inner, width, device: device, dtype: dtype)));
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        x = x + _attn.forward(_ln1.forward(x));
        x = x + _mlp.forward(_ln2.forward(x));
        return x.MoveToOuterDisposeScope();
    }

    private sealed class QuickGelu() : nn.Module<Tensor, Tensor>(nameof(QuickGelu))
    {
        public override Tensor forward(Tensor x) => x * torch.sigmoid(1.702 * x);
    }
}

/// <summary>PyTorch <c>nn.MultiheadAttention</c> as open_clip uses it (self-attention, no mask): keys
/// <c>in_proj_weight</c> [3D, D], <c>in_proj_bias</c> and <c>out_proj</c>. (B, T, D) → (B, T, D).</summary>
internal sealed class OpenClipAttention : nn.Module<Tensor, Tensor>
{
    [ComponentName(Name = "in_proj_weight")] private readonly Parameter _inProjWeight;
    [ComponentName(Name = "in_proj_bias")] private readonly Parameter _inProjBias;
    [ComponentName(Name = "out_proj")] private readonly Linear _outProj;
    private readonly int _heads;

    public OpenClipAttention(int width, int heads, Device? device, ScalarType? dtype) : base(nameof(OpenClipAttention))
    {
        _heads = heads;
        _inProjWeight = new Parameter(zeros(3 * width, width, dtype: dtype, device: device), requires_grad: false);
        _inProjBias = new Parameter(zeros(3 * width, dtype: dtype, device: device), requires_grad: false);
        _outProj = nn.Linear(width, width, device: device, dtype: dtype);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var qkv = nn.functional.linear(x, _inProjWeight, _inProjBias).chunk(3, -1);
        var q = Attention.SplitHeads(qkv[0], _heads);
        var k = Attention.SplitHeads(qkv[1], _heads);
        var v = Attention.SplitHeads(qkv[2], _heads);
        return _outProj.forward(Attention.MergeHeads(Attention.ScaledDotProduct(q, k, v, null))).MoveToOuterDisposeScope();
    }
}

/// <summary>open_clip v2.20 <c>Transformer</c>: the stack of residual attention blocks.</summary>
internal sealed class OpenClipTransformer : nn.Module<Tensor, Tensor>
{
    [ComponentName(Name = "resblocks")] private readonly ModuleList<OpenClipResidualAttentionBlock> _resblocks = new();

    public OpenClipTransformer(OpenClipVisionConfig config, Device? device, ScalarType? dtype) : base(nameof(OpenClipTransformer))
    {
        for (int i = 0; i < config.Layers; i++) _resblocks.Add(new OpenClipResidualAttentionBlock(config, device, dtype));
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        foreach (var block in _resblocks) x = block.forward(x);
        return x.MoveToOuterDisposeScope();
    }
}

/// <summary>The two outputs of <see cref="OpenClipVisionTransformer"/>.</summary>
/// <param name="Pooled">(B, OutputDim): <c>ln_post</c> of the class token, projected.</param>
/// <param name="Tokens">(B, patches, Width): the patch tokens of the last block, WITHOUT <c>ln_post</c>
/// (open_clip before 2.23 normalises only the pooled token; OpenFlamingo v2 was trained on these).</param>
internal sealed record OpenClipVisionOutput(Tensor Pooled, Tensor Tokens);

/// <summary>open_clip v2.20 <c>VisionTransformer</c> (transformer.py) with <c>output_tokens=True</c>, the
/// CLIP image tower OpenFlamingo uses (Radford et al. 2021). (B, 3, H, W) → pooled and patch tokens.</summary>
internal sealed class OpenClipVisionTransformer : nn.Module<Tensor, OpenClipVisionOutput>
{
    [ComponentName(Name = "conv1")] private readonly Conv2d _conv1;
    [ComponentName(Name = "class_embedding")] private readonly Parameter _classEmbedding;
    [ComponentName(Name = "positional_embedding")] private readonly Parameter _positionalEmbedding;
    [ComponentName(Name = "ln_pre")] private readonly LayerNorm _lnPre;
    [ComponentName(Name = "transformer")] private readonly OpenClipTransformer _transformer;
    [ComponentName(Name = "ln_post")] private readonly LayerNorm _lnPost;
    [ComponentName(Name = "proj")] private readonly Parameter _proj;
    private readonly OpenClipVisionConfig _config;

    public OpenClipVisionTransformer(OpenClipVisionConfig config, Device? device = null, ScalarType? dtype = null)
        : base(nameof(OpenClipVisionTransformer))
    {
        if (config.Unbound is { } extra)
            foreach (var key in new[] { "ls_init_value", "attentional_pool", "global_average_pool", "patch_dropout", "input_patchnorm" })
                if (extra.TryGetValue(key, out var v) && v.ValueKind is not (System.Text.Json.JsonValueKind.Null or System.Text.Json.JsonValueKind.False)
                    && !(v.ValueKind == System.Text.Json.JsonValueKind.Number && v.GetDouble() == 0))
                    throw new NotSupportedException($"open_clip vision_cfg.{key} = {v.GetRawText()} is not supported.");
        _config = config;
        int width = config.Width, grid = config.ImageSize / config.PatchSize;
        _conv1 = nn.Conv2d(3, width, config.PatchSize, stride: config.PatchSize, bias: false, device: device, dtype: dtype);
        _classEmbedding = new Parameter(zeros(width, dtype: dtype, device: device), requires_grad: false);
        _positionalEmbedding = new Parameter(zeros(grid * grid + 1, width, dtype: dtype, device: device), requires_grad: false);
        _lnPre = nn.LayerNorm(width, 1e-5, device: device, dtype: dtype);
        _transformer = new OpenClipTransformer(config, device, dtype);
        _lnPost = nn.LayerNorm(width, 1e-5, device: device, dtype: dtype);
        _proj = new Parameter(zeros(width, config.OutputDim, dtype: dtype, device: device), requires_grad: false);
        RegisterComponents();
    }

    public override OpenClipVisionOutput forward(Tensor pixels)
    {
        Shape.Require(pixels, "vision_x image", -1, 3, _config.ImageSize, _config.ImageSize);
        using var scope = NewDisposeScope();
        long b = pixels.shape[0];
        var x = _conv1.forward(pixels.to(_conv1.weight!.dtype)).flatten(2).transpose(1, 2);   // (B, grid², W)
        x = cat([_classEmbedding.view(1, 1, -1).expand(b, 1, -1), x], 1) + _positionalEmbedding; // (B, 1 + grid², W)
        x = _transformer.forward(_lnPre.forward(x));
        var pooled = _lnPost.forward(x.select(1, 0)).matmul(_proj);
        var tokens = x.narrow(1, 1, x.shape[1] - 1);
        return new OpenClipVisionOutput(pooled.MoveToOuterDisposeScope(), tokens.MoveToOuterDisposeScope());
    }
}
