// Shapes: B batch, P patches (grid²), D width.
using System.Text.Json.Serialization;
using Multimodal.Common;

namespace Multimodal.Vision;

/// <summary>The numbers that define a CLIP ViT, whichever codebase published it: open_clip's
/// <c>vision_cfg</c> and transformers' <c>IdeficsVisionConfig</c> both reduce to these.</summary>
/// <param name="ImageSize">input resolution.</param>
/// <param name="PatchSize">patch size.</param>
/// <param name="Channels">input channels.</param>
/// <param name="Width">model width D.</param>
/// <param name="Layers">residual blocks.</param>
/// <param name="Heads">attention heads.</param>
/// <param name="MlpWidth">hidden width of each block's MLP.</param>
/// <param name="LayerNormEps">LayerNorm epsilon.</param>
/// <param name="Activation">the MLP activation's upstream name (<c>gelu</c>, <c>quick_gelu</c>...).</param>
/// <param name="ActivationKey">the config key that named it, for errors.</param>
/// <param name="ProjectionDim">width of open_clip's <c>proj</c>; null when the published tower has none.</param>
internal sealed record ClipVisionSettings(int ImageSize, int PatchSize, int Channels, int Width, int Layers, int Heads,
    int MlpWidth, double LayerNormEps, string Activation, string ActivationKey, int? ProjectionDim);

/// <summary>open_clip v2.20 vision tower settings (<c>model_cfg.vision_cfg</c> of an open_clip model
/// config, e.g. ViT-L-14's: width 1024, 24 layers, head width 64, patch 14, image 224).</summary>
public sealed record OpenClipVisionConfig
{
    /// <summary><c>image_size</c> (default 224): Input resolution.</summary>
    public int ImageSize { get; init; } = 224;
    /// <summary><c>layers</c> (default 12): Transformer layers.</summary>
    public int Layers { get; init; } = 12;
    /// <summary><c>width</c> (default 768): Width.</summary>
    public int Width { get; init; } = 768;
    /// <summary><c>head_width</c> (default 64): Width of one attention head.</summary>
    public int HeadWidth { get; init; } = 64;
    /// <summary><c>mlp_ratio</c> (default 4.0): MLP width / width.</summary>
    public double MlpRatio { get; init; } = 4.0;
    /// <summary><c>patch_size</c> (default 16): Patch size.</summary>
    public int PatchSize { get; init; } = 16;
    /// <summary>Output width of <c>proj</c> (the CLIP embedding); set from <c>embed_dim</c>.</summary>
    [JsonIgnore] public int OutputDim { get; init; } = 512;
    /// <summary>QuickGELU (OpenAI weights) instead of exact GELU.</summary>
    [JsonIgnore] public bool QuickGelu { get; init; }
    /// <summary>Other keys (layer scale, attention pooling...); refused when they change the maths.</summary>
    [JsonExtensionData] public Dictionary<string, System.Text.Json.JsonElement>? Unbound { get; init; }

    private static readonly string[] Unsupported = ["ls_init_value", "attentional_pool", "global_average_pool", "patch_dropout", "input_patchnorm"];

    /// <summary>The tower these settings describe; refuses keys that would change its maths.</summary>
    internal ClipVisionSettings ToClip()
    {
        if (Unbound is { } extra)
            foreach (var key in Unsupported)
                if (extra.TryGetValue(key, out var v) && v.ValueKind is not (System.Text.Json.JsonValueKind.Null or System.Text.Json.JsonValueKind.False)
                    && !(v.ValueKind == System.Text.Json.JsonValueKind.Number && v.GetDouble() == 0))
                    throw new NotSupportedException($"open_clip vision_cfg.{key} = {v.GetRawText()} is not supported.");
        // open_clip's LayerNorm and nn.GELU use torch's defaults: eps 1e-5, exact GELU.
        return new ClipVisionSettings(ImageSize, PatchSize, 3, Width, Layers, Width / HeadWidth, (int)(Width * MlpRatio), 1e-5,
            QuickGelu ? "quick_gelu" : "gelu", "quick_gelu", OutputDim);
    }
}

/// <summary>PyTorch <c>nn.MultiheadAttention</c> as open_clip uses it (self-attention, no mask): keys
/// <c>in_proj_weight</c> [3D, D] (q, k, v stacked), <c>in_proj_bias</c> and <c>out_proj</c>. Also
/// transformers' <c>CLIPAttention</c>, whose separate q/k/v projections are stacked on load.
/// (B, T, D) → (B, T, D).</summary>
internal sealed class ClipAttention : nn.Module<Tensor, Tensor>
{
    [ComponentName(Name = "in_proj_weight")] private readonly Parameter _inProjWeight;
    [ComponentName(Name = "in_proj_bias")] private readonly Parameter _inProjBias;
    [ComponentName(Name = "out_proj")] private readonly Linear _outProj;
    private readonly int _heads;

    public ClipAttention(int width, int heads, Device? device, ScalarType? dtype) : base(nameof(ClipAttention))
    {
        _heads = heads;
        _inProjWeight = new Parameter(empty(3 * width, width, dtype: dtype, device: device), requires_grad: false);
        _inProjBias = new Parameter(empty(3 * width, dtype: dtype, device: device), requires_grad: false);
        _outProj = Uninitialized.Linear(width, width, device: device, dtype: dtype);
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

/// <summary>open_clip v2.20 <c>ResidualAttentionBlock</c> (transformer.py), transformers'
/// <c>CLIPEncoderLayer</c>: pre-LN attention, then pre-LN MLP <c>c_fc</c> → activation → <c>c_proj</c>.</summary>
internal sealed class ClipResidualAttentionBlock : nn.Module<Tensor, Tensor>
{
    [ComponentName(Name = "ln_1")] private readonly LayerNorm _ln1;
    [ComponentName(Name = "attn")] private readonly ClipAttention _attn;
    [ComponentName(Name = "ln_2")] private readonly LayerNorm _ln2;
    [ComponentName(Name = "mlp")] private readonly Sequential _mlp;
    private readonly Func<Tensor, Tensor> _activation;

    public ClipResidualAttentionBlock(ClipVisionSettings config, Device? device, ScalarType? dtype) : base(nameof(ClipResidualAttentionBlock))
    {
        int width = config.Width;
        _activation = Activations.Get(config.Activation, config.ActivationKey);
        _ln1 = nn.LayerNorm(width, config.LayerNormEps, device: device, dtype: dtype);
        _attn = new ClipAttention(width, config.Heads, device, dtype);
        _ln2 = nn.LayerNorm(width, config.LayerNormEps, device: device, dtype: dtype);
        _mlp = nn.Sequential(
            ("c_fc", Uninitialized.Linear(width, config.MlpWidth, device: device, dtype: dtype)),
            ("c_proj", Uninitialized.Linear(config.MlpWidth, width, device: device, dtype: dtype)));
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        x = x.Plus(_attn.forward(_ln1.forward(x)));
        var cFc = (Linear)_mlp[0];
        var cProj = (Linear)_mlp[1];
        x = x.Plus(cProj.forward(_activation(cFc.forward(_ln2.forward(x)))));
        return x.MoveToOuterDisposeScope();
    }
}

/// <summary>open_clip v2.20 <c>Transformer</c>: the stack of residual attention blocks.</summary>
internal sealed class ClipTransformer : nn.Module<Tensor, Tensor>
{
    [ComponentName(Name = "resblocks")] private readonly ModuleList<ClipResidualAttentionBlock> _resblocks = new();

    public ClipTransformer(ClipVisionSettings config, Device? device, ScalarType? dtype) : base(nameof(ClipTransformer))
    {
        for (int i = 0; i < config.Layers; i++) _resblocks.Add(new ClipResidualAttentionBlock(config, device, dtype));
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        foreach (var block in _resblocks) x = block.forward(x);
        return x.MoveToOuterDisposeScope();
    }
}

/// <summary>The CLIP image tower (Radford et al. 2021) as open_clip v2.20 <c>VisionTransformer</c>
/// (transformer.py, the tower OpenFlamingo uses) and transformers v4.44.2 <c>IdeficsVisionTransformer</c>
/// (CLIP's) build it: they differ only in names, so the names here are open_clip's and IDEFICS' key map
/// renames its checkpoint (IdeficsKeyMap). Patch convolution without bias, class token, learned
/// positions, <c>ln_pre</c>, the blocks; <c>ln_post</c> (IDEFICS' <c>post_layernorm</c>) and <c>proj</c>
/// only make the pooled embedding. (B, C, H, W) → (B, 1 + P, D), no <c>ln_post</c>: both OpenFlamingo
/// (open_clip before 2.23 normalises only the pooled token) and IDEFICS feed the perceiver this.</summary>
internal sealed class ClipVisionTransformer : nn.Module<Tensor, Tensor>
{
    [ComponentName(Name = "conv1")] private readonly Conv2d _conv1;
    [ComponentName(Name = "class_embedding")] private readonly Parameter _classEmbedding;
    [ComponentName(Name = "positional_embedding")] private readonly Parameter _positionalEmbedding;
    [ComponentName(Name = "ln_pre")] private readonly LayerNorm _lnPre;
    [ComponentName(Name = "transformer")] private readonly ClipTransformer _transformer;
    [ComponentName(Name = "ln_post")] private readonly LayerNorm _lnPost;
    [ComponentName(Name = "proj")] private readonly Parameter? _proj;
    private readonly ClipVisionSettings _config;
    private readonly string _inputName;

    /// <param name="config">the tower.</param>
    /// <param name="inputName">what the caller calls the pixel input, for shape errors.</param>
    /// <param name="device">where to build.</param>
    /// <param name="dtype">parameter dtype.</param>
    public ClipVisionTransformer(ClipVisionSettings config, string inputName, Device? device = null, ScalarType? dtype = null)
        : base(nameof(ClipVisionTransformer))
    {
        _config = config;
        _inputName = inputName;
        int width = config.Width, grid = config.ImageSize / config.PatchSize;
        _conv1 = nn.Conv2d(config.Channels, width, config.PatchSize, stride: config.PatchSize, bias: false, device: device, dtype: dtype);
        _classEmbedding = new Parameter(empty(width, dtype: dtype, device: device), requires_grad: false);
        _positionalEmbedding = new Parameter(empty(grid * grid + 1, width, dtype: dtype, device: device), requires_grad: false);
        _lnPre = nn.LayerNorm(width, config.LayerNormEps, device: device, dtype: dtype);
        _transformer = new ClipTransformer(config, device, dtype);
        _lnPost = nn.LayerNorm(width, config.LayerNormEps, device: device, dtype: dtype);
        if (config.ProjectionDim is int output)
            _proj = new Parameter(empty(width, output, dtype: dtype, device: device), requires_grad: false);
        RegisterComponents();
    }

    public override Tensor forward(Tensor pixels)
    {
        Shape.Require(pixels, _inputName, -1, _config.Channels, _config.ImageSize, _config.ImageSize);
        using var scope = NewDisposeScope();
        long b = pixels.size(0);
        var x = _conv1.forward(pixels.to(_conv1.weight!.dtype)).flatten(2).transpose(1, 2);       // (B, P, D)
        x = cat([_classEmbedding.view(1, 1, -1).expand(b, 1, -1), x], 1).Plus(_positionalEmbedding); // (B, 1 + P, D)
        return _transformer.forward(_lnPre.forward(x)).MoveToOuterDisposeScope();
    }

    /// <summary>open_clip's pooled embedding of a <see cref="forward"/> output: <c>ln_post</c> of the class
    /// token, projected. (B, 1 + P, D) → (B, ProjectionDim).</summary>
    public Tensor Pool(Tensor hidden)
    {
        if (_proj is null) throw new InvalidOperationException("This CLIP tower was published without a projection (proj).");
        using var scope = NewDisposeScope();
        return _lnPost.forward(hidden.select(1, 0)).matmul(_proj).MoveToOuterDisposeScope();
    }
}
