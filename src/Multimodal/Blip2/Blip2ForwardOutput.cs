
namespace Multimodal.Blip2;

/// <summary>What <see cref="Blip2ForConditionalGeneration.Forward"/> computes, step by step. The caller
/// owns the tensors; disposing the output disposes them all.</summary>
/// <param name="VisionLastHiddenState">(B, 1 + patches, Dv), after <c>post_layernorm</c>.</param>
/// <param name="VisionPoolerOutput">(B, Dv): <c>post_layernorm</c> applied again to the CLS row (upstream does this).</param>
/// <param name="QFormerLastHiddenState">(B, Q, Dq) query outputs.</param>
/// <param name="LanguageProjectionOutput">(B, Q, E) queries projected into the LM's embedding space.</param>
/// <param name="LmInputsEmbeds">(B, T', E) what the LM receives (queries spliced or prepended).</param>
/// <param name="LmAttentionMask">(B, T') int64 mask the LM receives.</param>
/// <param name="Logits">(B, T', V); for T5 the decoder's logits, (B, Td, V).</param>
/// <param name="EncoderLastHiddenState">T5 only: (B, T', D) encoder output.</param>
public sealed record Blip2ForwardOutput(
    Tensor VisionLastHiddenState,
    Tensor VisionPoolerOutput,
    Tensor QFormerLastHiddenState,
    Tensor LanguageProjectionOutput,
    Tensor LmInputsEmbeds,
    Tensor LmAttentionMask,
    Tensor Logits,
    Tensor? EncoderLastHiddenState = null) : IDisposable
{
    /// <summary>Tensors by the names the upstream reference files use.</summary>
    internal IReadOnlyDictionary<string, Tensor> ByReferenceName
    {
        get
        {
            var tensors = new Dictionary<string, Tensor>
            {
        ["vision_last_hidden_state"] = VisionLastHiddenState,
        ["vision_pooler_output"] = VisionPoolerOutput,
        ["qformer_last_hidden_state"] = QFormerLastHiddenState,
        ["language_projection_output"] = LanguageProjectionOutput,
        ["lm_inputs_embeds"] = LmInputsEmbeds,
        ["lm_attention_mask"] = LmAttentionMask,
        ["logits"] = Logits,
            };
            if (EncoderLastHiddenState is not null) tensors["encoder_last_hidden_state"] = EncoderLastHiddenState;
            return tensors;
        }
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        foreach (var t in ByReferenceName.Values) t.Dispose();
    }
}
