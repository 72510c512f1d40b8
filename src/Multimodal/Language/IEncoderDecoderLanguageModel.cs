using Multimodal.Generation;

namespace Multimodal.Language;

/// <summary>An encoder-decoder language model (T5) as the multimodal wrappers drive it: the prompt embeddings go through
/// the encoder once, and generation runs a decoder session that reads the encoder output by cross-attention.</summary>
internal interface IEncoderDecoderLanguageModel
{
    /// <summary>The id the decoder starts from (<c>decoder_start_token_id</c>, else the pad id).</summary>
    long DecoderStartTokenId { get; }

    /// <summary>Token embeddings (the table the encoder and decoder share).</summary>
    Tensor Embed(Tensor ids);

    /// <summary>(B, T, D) embeddings with their (B, T) mask → the encoder output.</summary>
    Tensor Encode(Tensor embeds, Tensor mask);

    /// <summary>The decoder over one encoder output, as a causal language model for the generator (owned by the caller).</summary>
    ICausalLanguageModel DecoderSession(Tensor encoderHidden, Tensor encoderMask);
}
