// Shapes: B images, S visual tokens, n latents, D vision width, h heads, d head width.
using Multimodal.Common;

namespace Multimodal.Idefics;

/// <summary>transformers v4.44.2 <c>IdeficsPerceiverAttention</c> (perceiver.py): latents attend over
/// [context; latents], separate q/k/v projections, optional per-head LayerNorms on q and k.</summary>
internal sealed class IdeficsPerceiverAttention : nn.Module
{
    [ComponentName(Name = "context_layer_norm")] private readonly LayerNorm _contextLayerNorm;
    [ComponentName(Name = "latents_layer_norm")] private readonly LayerNorm _latentsLayerNorm;
    [ComponentName(Name = "q_layer_norm")] private readonly LayerNorm? _qLayerNorm;
    [ComponentName(Name = "k_layer_norm")] private readonly LayerNorm? _kLayerNorm;
    [ComponentName(Name = "q_proj")] private readonly Linear _qProj;
    [ComponentName(Name = "k_proj")] private readonly Linear _kProj;
    [ComponentName(Name = "v_proj")] private readonly Linear _vProj;
    [ComponentName(Name = "output_proj")] private readonly Linear _outputProj;
    private readonly int _heads;

    public IdeficsPerceiverAttention(int dim, int heads, int headDim, bool qkNorms, Device? device, ScalarType? dtype) : base(nameof(IdeficsPerceiverAttention))
    {
        _heads = heads;
        _contextLayerNorm = nn.LayerNorm(dim, 1e-5, device: device, dtype: dtype);
        _latentsLayerNorm = nn.LayerNorm(dim, 1e-5, device: device, dtype: dtype);
        if (qkNorms)
        {
            _qLayerNorm = nn.LayerNorm(headDim, 1e-5, device: device, dtype: dtype);
            _kLayerNorm = nn.LayerNorm(headDim, 1e-5, device: device, dtype: dtype);
        }
        _qProj = Uninitialized.Linear(dim, heads * headDim, hasBias: false, device: device, dtype: dtype);
        _kProj = Uninitialized.Linear(dim, heads * headDim, hasBias: false, device: device, dtype: dtype);
        _vProj = Uninitialized.Linear(dim, heads * headDim, hasBias: false, device: device, dtype: dtype);
        _outputProj = Uninitialized.Linear(heads * headDim, dim, hasBias: false, device: device, dtype: dtype);
        RegisterComponents();
    }

    public Tensor Forward(Tensor context, Tensor latents)
    {
        using var scope = NewDisposeScope();
        context = _contextLayerNorm.forward(context);
        latents = _latentsLayerNorm.forward(latents);
        var both = cat([context, latents], 1);                                       // (B, S + n, D)
        var q = Attention.SplitHeads(_qProj.forward(latents), _heads);               // (B, h, n, d)
        var k = Attention.SplitHeads(_kProj.forward(both), _heads);                  // (B, h, S + n, d)
        var v = Attention.SplitHeads(_vProj.forward(both), _heads);
        if (_qLayerNorm is not null) { q = _qLayerNorm.forward(q); k = _kLayerNorm!.forward(k); }
        // Upstream subtracts the row max before softmax ("stable softmax"): the same weights.
        return _outputProj.forward(Attention.MergeHeads(Attention.ScaledDotProduct(q, k, v, null))).MoveToOuterDisposeScope();
    }
}

/// <summary>transformers v4.44.2 <c>IdeficsMLP</c> of the perceiver (perceiver.py): LayerNorm → fc →
/// ReLU → c_proj, no biases (not the SwiGLU of the decoder).</summary>
internal sealed class IdeficsPerceiverMlp : nn.Module<Tensor, Tensor>
{
    [ComponentName(Name = "ln")] private readonly LayerNorm _ln;
    [ComponentName(Name = "fc")] private readonly Linear _fc;
    [ComponentName(Name = "c_proj")] private readonly Linear _cProj;

    public IdeficsPerceiverMlp(int dim, int intermediate, Device? device, ScalarType? dtype) : base(nameof(IdeficsPerceiverMlp))
    {
        _ln = nn.LayerNorm(dim, 1e-5, device: device, dtype: dtype);
        _fc = Uninitialized.Linear(dim, intermediate, hasBias: false, device: device, dtype: dtype);
        _cProj = Uninitialized.Linear(intermediate, dim, hasBias: false, device: device, dtype: dtype);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        return _cProj.forward(nn.functional.relu(_fc.forward(_ln.forward(x)))).MoveToOuterDisposeScope();
    }
}

/// <summary>transformers v4.44.2 <c>IdeficsPerceiverResampler</c> (perceiver.py): (B, S, D) visual tokens
/// of one image → (B, n, D) latents.</summary>
internal sealed class IdeficsPerceiverResampler : nn.Module<Tensor, Tensor>
{
    [ComponentName(Name = "latents")] private readonly Parameter _latents;
    [ComponentName(Name = "blocks")] private readonly ModuleList<ModuleList<nn.Module>> _blocks = new();
    [ComponentName(Name = "layer_norm")] private readonly LayerNorm _layerNorm;

    public IdeficsPerceiverResampler(IdeficsConfig config, Device? device = null, ScalarType? dtype = null) : base(nameof(IdeficsPerceiverResampler))
    {
        var p = config.PerceiverConfig;
        int dim = config.VisionConfig.EmbedDim;
        _latents = new Parameter(zeros(p.ResamplerNLatents, dim, dtype: dtype, device: device), requires_grad: false);
        for (int i = 0; i < p.ResamplerDepth; i++)
            _blocks.Add(new ModuleList<nn.Module>(
                new IdeficsPerceiverAttention(dim, p.ResamplerNHeads, p.ResamplerHeadDim, p.QkLayerNormsPerceiver, device, dtype),
                new IdeficsPerceiverMlp(dim, 4 * dim, device, dtype)));
        _layerNorm = nn.LayerNorm(dim, 1e-5, device: device, dtype: dtype);
        RegisterComponents();
    }

    public override Tensor forward(Tensor context)
    {
        using var scope = NewDisposeScope();
        var latents = _latents.unsqueeze(0).expand(context.size(0), -1, -1);
        foreach (var block in _blocks)
        {
            latents = ((IdeficsPerceiverAttention)block[0]).Forward(context, latents).Plus(latents);
            latents = ((IdeficsPerceiverMlp)block[1]).forward(latents).Plus(latents);
        }
        return _layerNorm.forward(latents).MoveToOuterDisposeScope();
    }
}
