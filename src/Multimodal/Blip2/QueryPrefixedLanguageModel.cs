using Multimodal.Common;
using Multimodal.Generation;
using Multimodal.Language;

namespace Multimodal.Blip2;

/// <summary>The half BLIP-2 and InstructBLIP share after the Q-Former: the projected queries enter the language
/// model in front of (or in place of the image tokens in) the prompt, and the wrappers' <c>forward</c> and
/// <c>generate</c> drive a decoder-only or an encoder-decoder language model the way transformers'
/// <c>Blip2ForConditionalGeneration</c> / <c>InstructBlipForConditionalGeneration</c> do.</summary>
/// <param name="languageModel">the wrapper's <c>language_model</c> module.</param>
/// <param name="text">its config.</param>
/// <param name="numQueries">Q, the query tokens.</param>
/// <param name="imageTokenIndex">the image token of the processor-expanded layout, or null (queries in front).</param>
/// <param name="device">where inputs go.</param>
internal sealed class QueryPrefixedLanguageModel(nn.Module languageModel, TextConfig text, int numQueries, int? imageTokenIndex, Device device)
{
    /// <summary>Builds the family's language model for <paramref name="text"/>.</summary>
    /// <param name="text">the text config.</param>
    /// <param name="wrapper">the wrapper's name, for the error.</param>
    /// <param name="device">where to build.</param>
    /// <param name="dtype">parameter dtype.</param>
    /// <param name="supported">the <c>model_type</c>s this wrapper is published with.</param>
    public static nn.Module Build(TextConfig text, string wrapper, Device device, ScalarType dtype, params string[] supported)
    {
        if (!supported.Contains(text.ModelType) || LanguageModels.TryFor(text) is not { } descriptor)
            throw new NotSupportedException($"{wrapper} with text_config.model_type \"{text.ModelType}\" is not implemented; supported: " +
                string.Join(", ", supported) + ".");
        return descriptor.Build(text, device, dtype);
    }

    /// <summary>The language model's width, which the projection maps the queries to.</summary>
    public static int Width(TextConfig text) => LanguageModels.TryFor(text)?.HiddenSize(text) ?? 0;

    private readonly LanguageModelDescriptor _descriptor = LanguageModels.For(text);

    public ICausalLanguageModel LanguageModel => languageModel as ICausalLanguageModel
        ?? throw new InvalidOperationException("This model has an encoder-decoder language model.");

    /// <summary>The encoder-decoder language model (T5), or null for a decoder-only one.</summary>
    public IEncoderDecoderLanguageModel? EncoderDecoder => languageModel as IEncoderDecoderLanguageModel;

    private Tensor EmbedText(Tensor ids) => EncoderDecoder?.Embed(ids) ?? LanguageModel.EmbedTokens(ids);

    private int VocabSize => _descriptor.VocabSize(text);

    /// <summary>The most new tokens a prompt of <paramref name="promptPositions"/> positions leaves room for where the
    /// language model has a position table (OPT's learned positions); null otherwise.</summary>
    public int? NewTokenBudget(int promptPositions) => _descriptor.NewTokenBudget(text, promptPositions);

    /// <summary>The language model's input embeddings and mask, in the layout the config selects. With an image
    /// token the query embeddings replace the image tokens' embeddings row-major (upstream's boolean-index
    /// assignment); otherwise they are concatenated in front of the prompt and the mask gains Q ones.</summary>
    public (Tensor Embeds, Tensor Mask) BuildInputs(Tensor projected, Tensor inputIds, Tensor? attentionMask)
    {
        using var scope = NewDisposeScope();
        long b = projected.size(0);
        Shape.Require(inputIds, "input_ids", b, -1);
        if (inputIds.dtype != ScalarType.Int64) throw new ArgumentException($"input_ids must be int64, not {inputIds.dtype}.", nameof(inputIds));
        int vocab = VocabSize;
        if (inputIds.numel() > 0 && (inputIds.min().item<long>() < 0 || inputIds.max().item<long>() >= vocab))
            throw new ArgumentException($"input_ids must lie in [0, {vocab}); got [{inputIds.min().item<long>()}, {inputIds.max().item<long>()}].", nameof(inputIds));
        var ids = inputIds.to(device);
        var mask = attentionMask is null ? ones_like(ids) : attentionMask.to(ScalarType.Int64, device);
        Shape.Require(mask, "attention_mask", ids.size(0), ids.size(1));
        var embeds = EmbedText(ids);
        if (imageTokenIndex is int imageToken)
        {
            var isImage = ids.EqualTo(imageToken);                                              // (B, T)
            var perRow = isImage.sum(1);
            if (!perRow.EqualTo(numQueries).all().item<bool>())
                throw new ArgumentException(
                    $"Each row of input_ids must hold exactly {numQueries} image tokens (id {imageToken}); got [{string.Join(", ", perRow.data<long>().ToArray())}].",
                    nameof(inputIds));
            embeds = embeds.masked_scatter(isImage.unsqueeze(-1).expand_as(embeds), projected.to(embeds.dtype));
        }
        else
        {
            embeds = cat([projected.to(embeds.dtype), embeds], 1);                          // (B, Q + T, E)
            mask = cat([ones(b, projected.size(1), ScalarType.Int64, device), mask], 1);   // (B, Q + T)
        }
        return (embeds.MoveToOuterDisposeScope(), mask.MoveToOuterDisposeScope());
    }

    /// <summary>The wrapper's <c>forward</c> past the inputs: logits, and for T5 the encoder output. Positions are upstream
    /// <c>forward()</c>'s (0 … L−1, padding counted), not generation's.</summary>
    public (Tensor Logits, Tensor? EncoderHidden) Forward(Tensor embeds, Tensor mask, Tensor? decoderInputIds)
    {
        if (EncoderDecoder is { } t5)
        {
            // Encoder-decoder: [queries; prompt] go to the ENCODER; the decoder reads them by cross-attention.
            var encoderHidden = t5.Encode(embeds, mask);
            var decoderIds = decoderInputIds?.to(ScalarType.Int64, device)
                             ?? Scalars.Full([embeds.size(0), 1], t5.DecoderStartTokenId, ScalarType.Int64, device);
            var session = t5.DecoderSession(encoderHidden, mask);
            using var owned = (IDisposable)session;
            return (session.Forward(t5.Embed(decoderIds), ones_like(decoderIds), null), encoderHidden);
        }
        return (CausalLanguageModels.ForwardLogits(languageModel, embeds, mask), null);
    }

    /// <summary>Generation as the wrappers' <c>generate</c>: the language model is driven by the prompt embeddings;
    /// a decoder-only model's new tokens get <paramref name="prependedId"/> in front; T5's start from
    /// <c>decoder_start_token_id</c>.</summary>
    public GenerationOutput Generate(Tensor embeds, Tensor mask, GenerationCall call, long prependedId)
    {
        if (EncoderDecoder is { } t5) return GenerateEncoderDecoder(t5, embeds, mask, call);
        var options = call.Options;
        bool legacy = imageTokenIndex is null;
        int prompt = (int)embeds.size(1);
        // The wrappers shift max_length by Q − 1 and min_length by Q in the original layout; transformers then
        // counts the whole prompt-embedding length (no input_ids are passed). Neither set: 20 new tokens.
        int queries = legacy ? numQueries : 0;
        var (maxNew, minNew) = options.ResolveLimits(prompt - Math.Max(queries - 1, 0), prompt - queries, defaultMaxNewTokens: 20,
            budget: NewTokenBudget(prompt));
        var tokens = _descriptor.Tokens(text);
        long[] eos = options.EosTokenIds?.ToArray() ?? (tokens.Eos is long e ? [e] : []);
        long pad = options.PadTokenId ?? tokens.Pad ?? tokens.Eos ?? eos.FirstOrDefault();
        var request = new GenerationRequest
        {
            Model = LanguageModel, PromptEmbeds = embeds, PromptMask = mask, Call = call.Prefixing(_ => [prependedId]),
            MaxNewTokens = maxNew, MinNewTokens = minNew, Eos = eos, Pad = pad,
        };
        var output = Generation.Generator.Generate(request);
        return output with { Sequences = output.Sequences.Select(row => row.Prepend(prependedId).ToArray()).ToArray() };
    }

    // Encoder-decoder: the encoder runs once; the decoder starts from decoder_start_token_id, which the
    // output keeps and the repetition penalty sees; max/min_length count decoder ids (start included). The input
    // tokens are the encoder's (queries and prompt).
    private GenerationOutput GenerateEncoderDecoder(IEncoderDecoderLanguageModel t5, Tensor embeds, Tensor mask, GenerationCall call)
    {
        var options = call.Options;
        var tokens = _descriptor.Tokens(text);
        long start = t5.DecoderStartTokenId;
        var (maxNew, minNew) = options.ResolveLimits(maxLengthCounts: 1, minLengthCounts: 1);   // the start token
        long[] eos = options.EosTokenIds?.ToArray() ?? (tokens.Eos is long e ? [e] : []);
        long pad = options.PadTokenId ?? tokens.Pad ?? start;
        var encoderHidden = t5.Encode(embeds, mask);
        var session = t5.DecoderSession(encoderHidden, mask);
        using var owned = (IDisposable)session;
        var startIds = Scalars.Full([embeds.size(0), 1], start, ScalarType.Int64, device);
        var request = new GenerationRequest
        {
            Model = session, PromptEmbeds = t5.Embed(startIds), PromptMask = ones_like(startIds), PromptIds = startIds,
            Call = call.Prefixing(_ => [start]), InputTokens = mask.sum(1).cpu().data<long>().ToArray().Select(n => (int)n).ToArray(),
            MaxNewTokens = maxNew, MinNewTokens = minNew, Eos = eos, Pad = pad,
        };
        var output = Generation.Generator.Generate(request);
        return output with { Sequences = output.Sequences.Select(row => row.Prepend(start).ToArray()).ToArray() };
    }
}
