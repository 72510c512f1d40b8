// Shapes: B batch, L text positions, T images, n latents per image, D text width, Dv visual width, h heads, d head width.
using Multimodal.Common;

namespace Multimodal.Flamingo;

/// <summary>open_flamingo 2.0.1 <c>MaskedCrossAttention</c> (helpers.py): text attends to the visual
/// latents. With <c>only_attend_immediate_media</c> a token sees only the latents of the last image at or
/// before it (its "text time", the running count of media tokens), and a token before any image gets
/// zero attention output.</summary>
internal sealed class MaskedCrossAttention : nn.Module
{
    [ComponentName(Name = "norm")] private readonly LayerNorm _norm;
    [ComponentName(Name = "to_q")] private readonly Linear _toQ;
    [ComponentName(Name = "to_kv")] private readonly Linear _toKv;
    [ComponentName(Name = "to_out")] private readonly Linear _toOut;
    private readonly int _heads;
    private readonly double _scale;
    private readonly bool _onlyImmediate;

    public MaskedCrossAttention(GatedCrossAttentionConfig config, Device? device, ScalarType? dtype) : base(nameof(MaskedCrossAttention))
    {
        _heads = config.Heads;
        _scale = Math.Pow(config.DimHead, -0.5);
        _onlyImmediate = config.OnlyAttendImmediateMedia;
        int inner = config.DimHead * config.Heads;
        _norm = nn.LayerNorm(config.Dim, 1e-5, device: device, dtype: dtype);
        _toQ = Uninitialized.Linear(config.Dim, inner, hasBias: false, device: device, dtype: dtype);
        _toKv = Uninitialized.Linear(config.DimVisual, 2 * inner, hasBias: false, device: device, dtype: dtype);
        _toOut = Uninitialized.Linear(inner, config.Dim, hasBias: false, device: device, dtype: dtype);
        RegisterComponents();
    }

    /// <summary>Keys and values of the media, (B, h, T·n, d) each: constant for a request, computed once.</summary>
    public (Tensor Keys, Tensor Values) MediaKeysValues(Tensor media)
    {
        using var scope = NewDisposeScope();
        var kv = _toKv.Apply(media.flatten(1, 2)).chunk(2, -1);                  // (B, T·n, h·d) each
        var k = Common.Attention.SplitHeads(kv[0], _heads);
        var v = Common.Attention.SplitHeads(kv[1], _heads);
        return (k.MoveToOuterDisposeScope(), v.MoveToOuterDisposeScope());
    }

    /// <param name="x">(B, L, D) text.</param>
    /// <param name="keys">(B, h, T·n, d) from <see cref="MediaKeysValues"/>.</param>
    /// <param name="values">(B, h, T·n, d).</param>
    /// <param name="textTime">(B, L) int64: 1-based index of the image each token follows, 0 before any.</param>
    /// <param name="latentsPerImage">n.</param>
    public Tensor Forward(Tensor x, Tensor keys, Tensor values, Tensor textTime, long latentsPerImage)
    {
        using var scope = NewDisposeScope();
        var q = Common.Attention.SplitHeads(_toQ.Apply(_norm.forward(x)), _heads).Times(_scale); // (B, h, L, d)
        var sim = q.matmul(keys.transpose(-1, -2));                                              // (B, h, L, T·n)
        long images = keys.size(2) / latentsPerImage;
        var mediaTime = Common.Scalars.Arange(1, images + 1, ScalarType.Int64, x.device).repeat_interleave(latentsPerImage); // (T·n)
        var tt = textTime.view(textTime.size(0), 1, textTime.size(1), 1);                      // (B, 1, L, 1)
        var allowed = _onlyImmediate ? tt.eq(mediaTime) : tt.ge(mediaTime);                      // (B, 1, L, T·n)
        sim = sim.FillWhere(allowed.logical_not(), -MaxValue(sim.dtype));
        var attn = (sim - sim.amax([-1], keepdim: true)).softmax(-1);
        if (_onlyImmediate) attn = attn.FillWhere(tt.EqualTo(0), 0.0);
        var output = Common.Attention.MergeHeads(attn.matmul(values));
        return _toOut.Apply(output).MoveToOuterDisposeScope();
    }

    private static double MaxValue(ScalarType dtype) => -Common.Attention.MinValue(dtype);
}

/// <summary>open_flamingo 2.0.1 <c>GatedCrossAttentionBlock</c> (helpers.py; XATTN-DENSE of Alayrac et al.
/// 2022): x += tanh(attn_gate) · xattn(x, media); x += tanh(ff_gate) · ff(x). The gates start at 0 in
/// training, so the frozen LM is unchanged at initialisation.</summary>
internal sealed class GatedCrossAttentionBlock : nn.Module
{
    [ComponentName(Name = "attn")] private readonly MaskedCrossAttention _attn;
    [ComponentName(Name = "attn_gate")] private readonly Parameter _attnGate;
    [ComponentName(Name = "ff")] private readonly FlamingoFeedForward _ff;
    [ComponentName(Name = "ff_gate")] private readonly Parameter _ffGate;

    public GatedCrossAttentionBlock(GatedCrossAttentionConfig config, Device? device = null, ScalarType? dtype = null)
        : base(nameof(GatedCrossAttentionBlock))
    {
        _attn = new MaskedCrossAttention(config, device, dtype);
        _attnGate = new Parameter(zeros(1, dtype: dtype, device: device), requires_grad: false);
        _ff = new FlamingoFeedForward(config.Dim, config.FfMult, device, dtype);
        _ffGate = new Parameter(zeros(1, dtype: dtype, device: device), requires_grad: false);
        RegisterComponents();
    }

    public MaskedCrossAttention CrossAttention => _attn;

    public Tensor Forward(Tensor x, Tensor keys, Tensor values, Tensor textTime, long latentsPerImage)
    {
        using var scope = NewDisposeScope();
        x = _attn.Forward(x, keys, values, textTime, latentsPerImage).mul(_attnGate.tanh()).Plus(x);
        x = _ff.forward(x).mul(_ffGate.tanh()).Plus(x);
        return x.MoveToOuterDisposeScope();
    }
}

/// <summary>The media one Flamingo forward attends to: per layer with a gated block, the media's keys and values
/// (computed once per request), and per text position the count of images before it (<c>text_time</c>).</summary>
/// <param name="KeysValues">per decoder layer, its block's media keys and values (null where it has no block).</param>
/// <param name="TextTime">(B, T) images at or before each position (0: no image yet).</param>
/// <param name="LatentsPerImage">latents per image after the perceiver.</param>
internal sealed record FlamingoMedia((Tensor Keys, Tensor Values)?[] KeysValues, Tensor TextTime, long LatentsPerImage) : Language.ILayerContext;

/// <summary>open_flamingo 2.0.1 <c>FlamingoLayer</c> (flamingo_lm.py): gated cross-attention to the media (where
/// this layer has a block), then the language model's own decoder layer. Keys read
/// <c>…{i}.gated_cross_attn_layer.*</c> and <c>…{i}.decoder_layer.*</c>. It holds no conditioning state: the
/// media come with every forward.</summary>
internal sealed class FlamingoLayer : nn.Module, Language.IWrappedDecoderLayer
{
    [ComponentName(Name = "gated_cross_attn_layer")] private readonly GatedCrossAttentionBlock? _gatedCrossAttnLayer;
    [ComponentName(Name = "decoder_layer")] private readonly nn.Module _decoderLayer;
    private readonly int _index;

    public FlamingoLayer(int index, GatedCrossAttentionBlock? gatedCrossAttnLayer, nn.Module decoderLayer) : base(nameof(FlamingoLayer))
    {
        _index = index;
        _gatedCrossAttnLayer = gatedCrossAttnLayer;
        _decoderLayer = decoderLayer;
        RegisterComponents();
    }

    public GatedCrossAttentionBlock? GatedCrossAttention => _gatedCrossAttnLayer;

    public nn.Module DecoderLayer => _decoderLayer;

    /// <summary>(B, T, D) → (B, T, D). Without media (a plain language-model forward) only the decoder layer runs.</summary>
    public Tensor Forward(Tensor hidden, Language.ILayerContext? context, Func<Tensor, Tensor> decoderLayer)
    {
        if (_gatedCrossAttnLayer is not null && context is FlamingoMedia media && media.KeysValues[_index] is var (keys, values))
            hidden = _gatedCrossAttnLayer.Forward(hidden, keys, values, media.TextTime, media.LatentsPerImage);
        return decoderLayer(hidden);
    }
}
