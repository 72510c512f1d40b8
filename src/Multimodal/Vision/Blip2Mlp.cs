using Multimodal.Common;

namespace Multimodal.Vision;

/// <summary>transformers v4.45.1 <c>Blip2MLP</c> (modeling_blip_2.py): fc1 → activation → fc2.</summary>
internal sealed class Blip2Mlp : nn.Module<Tensor, Tensor>
{
    [ComponentName(Name = "fc1")] private readonly Linear _fc1;
    [ComponentName(Name = "fc2")] private readonly Linear _fc2;
    private readonly Func<Tensor, Tensor> _activation;

    public Blip2Mlp(Blip2VisionConfig config, Device? device = null, ScalarType? dtype = null)
        : base(nameof(Blip2Mlp))
    {
        _activation = Activations.Get(config.HiddenAct, "vision_config.hidden_act");
        _fc1 = Uninitialized.Linear(config.HiddenSize, config.IntermediateSize, device: device, dtype: dtype);
        _fc2 = Uninitialized.Linear(config.IntermediateSize, config.HiddenSize, device: device, dtype: dtype);
        RegisterComponents();
    }

    public override Tensor forward(Tensor hidden)
    {
        using var scope = NewDisposeScope();
        return _fc2.forward(_activation(_fc1.forward(hidden))).MoveToOuterDisposeScope();
    }
}
