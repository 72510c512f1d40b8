namespace Multimodal.Common;

/// <summary>Layers built without the random initialisation TorchSharp's constructors perform: every parameter
/// is about to be overwritten by the loader, and <c>nn.Linear</c>'s Kaiming-uniform draw over all weights was
/// most of a load (a 1 B-parameter BLIP-2 took 15 s to load from the page cache, which it reads in 1.3 s).
/// Code that trains from scratch initialises the weights itself.</summary>
internal static class Uninitialized
{
    /// <summary><c>nn.Linear</c> whose weight and bias hold whatever memory they were given.</summary>
    public static Linear Linear(long inFeatures, long outFeatures, bool hasBias = true, Device? device = null, ScalarType? dtype = null) =>
        nn.Linear(
            new Parameter(empty(outFeatures, inFeatures, dtype: dtype, device: device)),
            hasBias ? new Parameter(empty(outFeatures, dtype: dtype, device: device)) : null);
}
