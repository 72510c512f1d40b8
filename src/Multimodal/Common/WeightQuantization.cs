namespace Multimodal.Common;

/// <summary>How a language model's linear weights are stored after loading: as the checkpoint gives them, or quantized
/// (weights only: activations stay in the model's dtype between layers; on the CPU each quantized product rounds its
/// input rows to 8 bits for the integer multiply, see <see cref="CpuKernelOptions.QuantizedInputs"/>).</summary>
public enum WeightQuantization
{
    /// <summary>As loaded.</summary>
    None,

    /// <summary>8-bit integers, symmetric, one float32 scale per output channel (a quarter of float32's bytes).</summary>
    Int8,

    /// <summary>4-bit integers, symmetric, one float32 scale per group of 32 inputs of an output channel (llama.cpp's Q4_0
    /// group size; 5 bits a weight with the scales). A layer whose input width is not a multiple of 32 is kept in 8 bits.</summary>
    Int4,
}
