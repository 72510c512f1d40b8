using Multimodal.Common;
using System.Runtime.CompilerServices;
using System.Threading.Channels;
using Multimodal.Generation;
using Multimodal.Loading;
using Multimodal.Processing;

namespace Multimodal.Blip2;

/// <summary>A caption or answer, with the ids it came from.</summary>
/// <param name="Text">decoded text, special tokens skipped, surrounding whitespace trimmed.</param>
/// <param name="Ids">the generated ids as upstream returns them (BOS, new tokens, padding).</param>
/// <param name="Score">the sequence score (see <see cref="GenerationOutput.Scores"/>).</param>
public sealed record CaptionResult(string Text, IReadOnlyList<long> Ids, double Score);

/// <summary>The one-stop BLIP-2 API: load a checkpoint folder, then caption images or answer questions
/// about them, batched or streamed. Calls on one instance are serialized.</summary>
/// <example>
/// <code>
/// using var blip2 = Blip2Captioner.FromPretrained("blip2-opt-2.7b");
/// var caption = await blip2.CaptionAsync("cat.jpg");
/// var answer = await blip2.AskAsync("cat.jpg", "what is the cat lying on?");
/// </code>
/// </example>
public sealed class Blip2Captioner : IDisposable
{
    private readonly SemaphoreSlim _gate = new(1, 1);

    /// <summary>The model.</summary>
    public Blip2ForConditionalGeneration Model { get; }

    /// <summary>Image processor and tokenizer.</summary>
    public Blip2Processor Processor { get; }

    /// <summary>Upper bound on decoded image pixels (decompression bombs are refused).</summary>
    public long MaxImagePixels { get; init; } = ImageDecoder.DefaultMaxPixels;

    /// <summary>Combines a loaded model and its processor.</summary>
    public Blip2Captioner(Blip2ForConditionalGeneration model, Blip2Processor processor)
    {
        Model = model;
        Processor = processor;
    }

    /// <summary>Loads a BLIP-2 checkpoint folder: config, weights, preprocessor config and tokenizer files.</summary>
    /// <param name="folder">e.g. a download of Salesforce/blip2-opt-2.7b.</param>
    /// <param name="device">CPU (default) or CUDA; CUDA needs a TorchSharp CUDA backend package.</param>
    /// <param name="dtype">Float32 (default), Float16 or BFloat16.</param>
    /// <param name="progress">receives a report after each weight tensor.</param>
    public static Blip2Captioner FromPretrained(string folder, Device? device = null, ScalarType? dtype = null,
        IProgress<LoadProgress>? progress = null)
    {
        return Ownership.DisposeOnFailure(Blip2ForConditionalGeneration.FromPretrained(folder, device, dtype, progress),
            model => new Blip2Captioner(model, Blip2Processor.FromFolder(folder, model.Config)));
    }

    /// <summary>The BLIP-2 VQA prompt for a question.</summary>
    public static string QuestionPrompt(string question) => $"Question: {question} Answer:";

    /// <summary>Captions an image file; <paramref name="prompt"/> optionally starts the caption ("a photo of").</summary>
    public Task<CaptionResult> CaptionAsync(string imagePath, string prompt = "", GenerationOptions? options = null, CancellationToken cancellationToken = default) =>
        CaptionAsync(ImageDecoder.Decode(imagePath, MaxImagePixels), prompt, options, cancellationToken);

    /// <summary>Captions a decoded image.</summary>
    public async Task<CaptionResult> CaptionAsync(DecodedImage image, string prompt = "", GenerationOptions? options = null, CancellationToken cancellationToken = default) =>
        (await CaptionAsync([image], [prompt], options, cancellationToken).ConfigureAwait(false))[0];

    /// <summary>Answers a question about an image file (prompt "Question: {q} Answer:").</summary>
    public Task<CaptionResult> AskAsync(string imagePath, string question, GenerationOptions? options = null, CancellationToken cancellationToken = default) =>
        CaptionAsync(imagePath, QuestionPrompt(question), options, cancellationToken);

    /// <summary>Answers a question about a decoded image.</summary>
    public Task<CaptionResult> AskAsync(DecodedImage image, string question, GenerationOptions? options = null, CancellationToken cancellationToken = default) =>
        CaptionAsync(image, QuestionPrompt(question), options, cancellationToken);

    /// <summary>Captions a batch (one prompt per image). Rows are left-padded; each row's result is
    /// what it would be alone, up to float rounding.</summary>
    public async Task<IReadOnlyList<CaptionResult>> CaptionAsync(IReadOnlyList<DecodedImage> images, IReadOnlyList<string> prompts,
        GenerationOptions? options = null, CancellationToken cancellationToken = default)
    {
        options ??= new GenerationOptions();
        await _gate.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            return await Task.Run(() =>
            {
                using var inputs = Processor.Process(images, prompts);
                using var output = Model.Generate(inputs.PixelValues, inputs.InputIds, inputs.AttentionMask, options,
                    Decode, null, cancellationToken);
                return (IReadOnlyList<CaptionResult>)output.Sequences
                    .Select((ids, i) => new CaptionResult(Processor.Tokenizer.Decode(ids).Trim(), ids, output.Scores[i]))
                    .ToList();
            }, cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            _gate.Release();
        }
    }

    /// <summary>Streams a caption as it is generated, in decoded pieces (a character split across tokens
    /// comes out whole). Greedy or sampling only.</summary>
    public IAsyncEnumerable<string> CaptionStreamAsync(DecodedImage image, string prompt = "", GenerationOptions? options = null,
        CancellationToken cancellationToken = default) => StreamAsync(image, prompt, options ?? new GenerationOptions(), cancellationToken);

    /// <summary>Streams the answer to a question about an image.</summary>
    public IAsyncEnumerable<string> AskStreamAsync(DecodedImage image, string question, GenerationOptions? options = null,
        CancellationToken cancellationToken = default) => CaptionStreamAsync(image, QuestionPrompt(question), options, cancellationToken);

    private async IAsyncEnumerable<string> StreamAsync(DecodedImage image, string prompt, GenerationOptions options,
        [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        if (options.NumBeams > 1)
            throw new NotSupportedException("Streaming needs greedy search or sampling: beam search only knows its result at the end.");
        var channel = Channel.CreateUnbounded<string>(new UnboundedChannelOptions { SingleReader = true, SingleWriter = true });
        await _gate.WaitAsync(cancellationToken).ConfigureAwait(false);
        var producer = Task.Run(() =>
        {
            try
            {
                var decoder = Processor.Tokenizer.CreateStreamingDecoder();
                using var inputs = Processor.Process([image], [prompt]);
                using var output = Model.Generate(inputs.PixelValues, inputs.InputIds, inputs.AttentionMask, options, Decode,
                    (ids, open) =>
                    {
                        if (!open[0]) return;
                        var piece = decoder.Push(ids[0]);
                        if (piece.Length > 0) channel.Writer.TryWrite(piece);
                    }, cancellationToken);
                var rest = decoder.Flush();
                if (rest.Length > 0) channel.Writer.TryWrite(rest);
                channel.Writer.TryComplete();
            }
            catch (Exception e)
            {
                channel.Writer.TryComplete(e);
            }
            finally
            {
                _gate.Release();
            }
        }, CancellationToken.None);
        await foreach (var piece in channel.Reader.ReadAllAsync(cancellationToken).ConfigureAwait(false))
            yield return piece;
        await producer.ConfigureAwait(false);
    }

    private string Decode(IReadOnlyList<long> ids) => Processor.Tokenizer.Decode(ids);

    /// <inheritdoc/>
    public void Dispose()
    {
        Model.Dispose();
        _gate.Dispose();
    }
}
