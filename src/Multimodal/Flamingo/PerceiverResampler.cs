// Shapes: b batch, T images per sample, F frames per image, v visual tokens, n latents, D width, h heads, d head width.
using Multimodal.Common;

namespace Multimodal.Flamingo;

/// <summary>Flamingo's feed-forward block as open_flamingo 2.0.1 <c>helpers.FeedForward</c> builds it:
/// <c>Sequential(LayerNorm, Linear, GELU, Linear)</c>, so its keys read <c>0.*</c>, <c>1.weight</c>, <c>3.weight</c>. A
/// module rather than a <c>Sequential</c> so its linears take the same kernel routing as the language model's (the gated
/// blocks' run at every decode step).</summary>
internal sealed class FlamingoFeedForward : nn.Module<Tensor, Tensor>
{
    [ComponentName(Name = "0")] private readonly LayerNorm _norm;
    [ComponentName(Name = "1")] private readonly Linear _up;
    [ComponentName(Name = "3")] private readonly Linear _down;

    public FlamingoFeedForward(int dim, int mult, Device? device, ScalarType? dtype) : base(nameof(FlamingoFeedForward))
    {
        _norm = nn.LayerNorm(dim, 1e-5, device: device, dtype: dtype);
        _up = Uninitialized.Linear(dim, dim * mult, hasBias: false, device: device, dtype: dtype);
        _down = Uninitialized.Linear(dim * mult, dim, hasBias: false, device: device, dtype: dtype);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        return _down.Apply(nn.functional.gelu(_up.Apply(_norm.forward(x)))).MoveToOuterDisposeScope();
    }
}

/// <summary>open_flamingo 2.0.1 <c>PerceiverAttention</c> (helpers.py, after lucidrains' flamingo-pytorch):
/// latents attend over [media; latents]. (b, T, v, D) media + (b, T, n, D) latents → (b, T, n, D).</summary>
internal sealed class PerceiverAttention : nn.Module
{
    [ComponentName(Name = "norm_media")] private readonly LayerNorm _normMedia;
    [ComponentName(Name = "norm_latents")] private readonly LayerNorm _normLatents;
    [ComponentName(Name = "to_q")] private readonly Linear _toQ;
    [ComponentName(Name = "to_kv")] private readonly Linear _toKv;
    [ComponentName(Name = "to_out")] private readonly Linear _toOut;
    private readonly int _heads;

    public PerceiverAttention(int dim, int dimHead, int heads, Device? device, ScalarType? dtype) : base(nameof(PerceiverAttention))
    {
        _heads = heads;
        int inner = dimHead * heads;
        _normMedia = nn.LayerNorm(dim, 1e-5, device: device, dtype: dtype);
        _normLatents = nn.LayerNorm(dim, 1e-5, device: device, dtype: dtype);
        _toQ = Uninitialized.Linear(dim, inner, hasBias: false, device: device, dtype: dtype);
        _toKv = Uninitialized.Linear(dim, 2 * inner, hasBias: false, device: device, dtype: dtype);
        _toOut = Uninitialized.Linear(inner, dim, hasBias: false, device: device, dtype: dtype);
        RegisterComponents();
    }

    public Tensor Forward(Tensor media, Tensor latents)
    {
        using var scope = NewDisposeScope();
        long b = latents.size(0), t = latents.size(1), n = latents.size(2), dim = latents.size(3);
        media = _normMedia.forward(media);
        latents = _normLatents.forward(latents);
        var q = _toQ.forward(latents).view(b * t, n, -1);                               // (bT, n, h·d)
        var kv = _toKv.forward(cat([media, latents], 2)).view(b * t, media.size(2) + n, -1).chunk(2, -1);
        // Upstream subtracts the row max before softmax; softmax is shift-invariant, so the fused kernel agrees.
        var context = Attention.ScaledDotProduct(
            Attention.SplitHeads(q, _heads), Attention.SplitHeads(kv[0], _heads), Attention.SplitHeads(kv[1], _heads), null);
        return _toOut.forward(Attention.MergeHeads(context)).view(b, t, n, dim).MoveToOuterDisposeScope();
    }
}

/// <summary>open_flamingo 2.0.1 <c>PerceiverResampler</c> (helpers.py; Alayrac et al. 2022): a fixed number
/// of learned latents cross-attend to any number of visual tokens, <c>depth</c> times, each followed by a
/// feed-forward block. (b, T, F, v, D) → (b, T, n, D). Depth and latent count come from the config or
/// the weights (published: 6 and 64).</summary>
internal sealed class PerceiverResampler : nn.Module<Tensor, Tensor>
{
    [ComponentName(Name = "latents")] private readonly Parameter _latents;
    [ComponentName(Name = "layers")] private readonly ModuleList<ModuleList<nn.Module>> _layers = new();
    [ComponentName(Name = "norm")] private readonly LayerNorm _norm;

    public PerceiverResampler(PerceiverConfig config, Device? device = null, ScalarType? dtype = null) : base(nameof(PerceiverResampler))
    {
        if (config.MaxNumMedia is not null || config.MaxNumFrames is not null)
            throw new NotSupportedException("Perceiver media-time and frame embeddings (max_num_media / max_num_frames) are not supported; OpenFlamingo v2 uses neither.");
        _latents = new Parameter(zeros(config.NumLatents, config.Dim, dtype: dtype, device: device), requires_grad: false);
        for (int i = 0; i < config.Depth; i++)
            _layers.Add(new ModuleList<nn.Module>(
                new PerceiverAttention(config.Dim, config.DimHead, config.Heads, device, dtype),
                new FlamingoFeedForward(config.Dim, config.FfMult, device, dtype)));
        _norm = nn.LayerNorm(config.Dim, 1e-5, device: device, dtype: dtype);
        RegisterComponents();
    }

    public override Tensor forward(Tensor media)
    {
        using var scope = NewDisposeScope();
        long b = media.size(0), t = media.size(1);
        var x = media.flatten(2, 3);                                                 // (b, T, F·v, D)
        var latents = _latents.view(1, 1, _latents.size(0), -1).expand(b, t, -1, -1);  // (b, T, n, D)
        foreach (var layer in _layers)
        {
            latents = ((PerceiverAttention)layer[0]).Forward(x, latents).Plus(latents);
            latents = ((FlamingoFeedForward)layer[1]).forward(latents).Plus(latents);
        }
        return _norm.forward(latents).MoveToOuterDisposeScope();
    }
}
