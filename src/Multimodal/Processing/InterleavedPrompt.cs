namespace Multimodal.Processing;

/// <summary>One part of an interleaved prompt.</summary>
public abstract record PromptPart;

/// <summary>Text.</summary>
/// <param name="Text">the text.</param>
public sealed record TextPart(string Text) : PromptPart;

/// <summary>An image, at this place in the text.</summary>
/// <param name="Image">the decoded image.</param>
public sealed record ImagePart(DecodedImage Image) : PromptPart;

/// <summary>Text and images in order, the input of Flamingo-style models.</summary>
/// <example><code>
/// var prompt = InterleavedPrompt.Create()
///     .Image(ImageDecoder.Decode("cats.jpg")).Text("An image of two cats.").EndOfChunk()
///     .Image(ImageDecoder.Decode("query.jpg")).Text("An image of");
/// </code></example>
public sealed record InterleavedPrompt(IReadOnlyList<PromptPart> Parts)
{
    /// <summary>OpenFlamingo's marker that closes a few-shot example.</summary>
    public const string EndOfChunkText = "<|endofchunk|>";

    /// <summary>An empty prompt to add parts to.</summary>
    public static InterleavedPrompt Create() => new([]);

    /// <summary>Appends text.</summary>
    public InterleavedPrompt Text(string text) => new([.. Parts, new TextPart(text)]);

    /// <summary>Appends an image.</summary>
    public InterleavedPrompt Image(DecodedImage image) => new([.. Parts, new ImagePart(image)]);

    /// <summary>Closes a few-shot example (OpenFlamingo's <c>&lt;|endofchunk|&gt;</c>; ignored by IDEFICS).</summary>
    public InterleavedPrompt EndOfChunk() => Text(EndOfChunkText);

    /// <summary>The images in order.</summary>
    public IReadOnlyList<DecodedImage> Images => Parts.OfType<ImagePart>().Select(p => p.Image).ToList();

    /// <summary>OpenFlamingo's few-shot format: each example as <c>&lt;image&gt;{text}&lt;|endofchunk|&gt;</c>,
    /// then the query image and the start of its text.</summary>
    public static InterleavedPrompt FewShot(IEnumerable<(DecodedImage Image, string Text)> examples, DecodedImage query, string queryText)
    {
        var prompt = Create();
        foreach (var (image, text) in examples) prompt = prompt.Image(image).Text(text).EndOfChunk();
        return prompt.Image(query).Text(queryText);
    }

    /// <summary>OpenFlamingo's text: <c>&lt;image&gt;</c> where each image stands, the text parts as given.</summary>
    public string ToOpenFlamingoText() =>
        string.Concat(Parts.Select(p => p is TextPart t ? t.Text : "<image>"));
}

/// <summary>IDEFICS' prompt layout, as transformers v4.44.2 <c>IdeficsProcessor</c> builds it: BOS, then each
/// image as <c>&lt;fake_token_around_image&gt;&lt;image&gt;&lt;fake_token_around_image&gt;</c>, or
/// <c>&lt;image&gt;&lt;fake_token_around_image&gt;</c> right after another image, and the text tokenized in
/// between; and its <c>image_attention_mask</c>.</summary>
public static class IdeficsPromptLayout
{
    /// <summary>The ids of a prompt (BOS first; <see cref="InterleavedPrompt.EndOfChunk"/> parts are dropped).</summary>
    public static long[] Ids(InterleavedPrompt prompt, Func<string, IReadOnlyList<long>> encodeText, long bos, long fakeToken, long imageToken)
    {
        var ids = new List<long> { bos };
        bool lastWasImage = false;
        foreach (var part in prompt.Parts)
        {
            if (part is ImagePart)
            {
                if (!lastWasImage) ids.Add(fakeToken);
                ids.Add(imageToken);
                ids.Add(fakeToken);
                lastWasImage = true;
            }
            else if (part is TextPart { Text: var text } && text != InterleavedPrompt.EndOfChunkText && text.Length > 0)
            {
                ids.AddRange(encodeText(text));
                lastWasImage = false;
            }
        }
        return ids.ToArray();
    }

    /// <summary>(L, images) one-hot rows: token t attends image k when k is the last image at or before t,
    /// counted over the row (<c>image_attention_mask_for_packed_input_ids</c> +
    /// <c>incremental_to_binary_attention_mask</c>); a token after an end-of-document id sees no image until
    /// the next one; tokens before the first image (and padding) see none.</summary>
    public static long[,] ImageAttentionMask(IReadOnlyList<long> ids, long imageToken, long? eosToken, int images)
    {
        var mask = new long[ids.Count, images];
        int count = -1;
        bool seenEod = false;
        for (int t = 0; t < ids.Count; t++)
        {
            if (ids[t] == imageToken)
            {
                count++;
                seenEod = false;
            }
            int index = seenEod ? -1 : count;
            if (index >= 0 && index < images) mask[t, index] = 1;
            if (eosToken is long eos && ids[t] == eos) seenEod = true;
        }
        return mask;
    }
}
