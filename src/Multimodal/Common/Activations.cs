
namespace Multimodal.Common;

/// <summary>The activation functions named by upstream configs (<c>hidden_act</c>,
/// <c>activation_function</c>), as transformers' <c>ACT2FN</c> defines them.</summary>
internal static class Activations
{
    /// <summary>Returns the activation for an upstream name, or throws naming the config key.</summary>
    public static Func<Tensor, Tensor> Get(string name, string configKey) => name switch
    {
        "gelu" => x => nn.functional.gelu(x),
        "relu" => x => nn.functional.relu(x),
        "silu" or "swish" => x => nn.functional.silu(x),
        // transformers' NewGELUActivation, written out as upstream does.
        "gelu_new" or "gelu_pytorch_tanh" => x => x.Times(0.5).mul(torch.tanh(x.Plus(x.Pow(3.0).Times(0.044715)).Times(Math.Sqrt(2.0 / Math.PI))).Plus(1.0)),
        "quick_gelu" => x => x.mul(torch.sigmoid(x.Times(1.702))),
        "tanh" => x => torch.tanh(x),
        _ => throw new NotSupportedException(
            $"{configKey} = \"{name}\" is not supported; expected one of gelu, gelu_new, gelu_pytorch_tanh, relu, silu, quick_gelu, tanh."),
    };
}
