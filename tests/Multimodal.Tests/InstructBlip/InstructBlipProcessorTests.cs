using Multimodal.InstructBlip;
using Multimodal.Processing;
using Multimodal.Tests.TestSupport;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace Multimodal.Tests.InstructBlip;

/// <summary><see cref="InstructBlipProcessor"/> on a hub-layout folder with the real tokenizers: the instruction goes
/// through the LM's tokenizer (Vicuna: &lt;/s&gt; as BOS, left padding with [PAD]; Flan-T5: &lt;/s&gt; at the end, right
/// padding) and through the Q-Former's BERT tokenizer ([CLS] … [SEP], right padding); the image token layout puts
/// num_query_tokens image tokens in front. Expected ids come from each tokenizer's own encoding, whose parity with
/// upstream is tested in Tokenizers/.</summary>
public sealed class InstructBlipProcessorTests(ITestOutputHelper output)
{
    private static readonly string Tokenizers = Path.Combine(AppContext.BaseDirectory, "Tokenizers");
    private static readonly string[] Prompts = ["What is unusual about this image?", "Describe it."];

    private static TempDir Folder(string fixture, bool t5)
    {
        var folder = TempDir.CopyOf(FixtureCase.Get(fixture).Path);
        if (t5)
            File.Copy(Path.Combine(Tokenizers, "t5", "spiece.model"), Path.Combine(folder.Path, "spiece.model"));
        else
        {
            File.Copy(Path.Combine(Tokenizers, "llama", "tokenizer.model"), Path.Combine(folder.Path, "tokenizer.model"));
            File.WriteAllText(Path.Combine(folder.Path, "tokenizer_config.json"), """{"tokenizer_class": "LlamaTokenizer", "bos_token": "</s>", "pad_token": "[PAD]", "padding_side": "left"}""");
            File.WriteAllText(Path.Combine(folder.Path, "added_tokens.json"), """{"[PAD]": 32000}""");
        }
        Directory.CreateDirectory(Path.Combine(folder.Path, "qformer_tokenizer"));
        File.Copy(Path.Combine(Tokenizers, "bert", "vocab.txt"), Path.Combine(folder.Path, "qformer_tokenizer", "vocab.txt"));
        File.Copy(Path.Combine(AppContext.BaseDirectory, "Preprocess", "configs", "blip2-opt-2.7b", "preprocessor_config.json"),
            Path.Combine(folder.Path, "preprocessor_config.json"));
        return folder;
    }

    private static DecodedImage[] Images => [.. Enumerable.Repeat(ImageDecoder.Decode(Repo.Scene1), Prompts.Length)];

    private static long[] Row(Tensor t, int b) => t[b].data<long>().ToArray();

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Vicuna_prompts_start_with_eos_as_bos_and_are_left_padded_and_the_qformer_gets_bert_ids(bool imageTokens)
    {
        using var folder = Folder(imageTokens ? "instructblip-vicuna-imgtok" : "instructblip-vicuna", t5: false);
        var config = InstructBlipConfig.Load(Path.Combine(folder.Path, "config.json"));
        var processor = InstructBlipProcessor.FromFolder(folder.Path, config);
        using var inputs = processor.Process(Images, Prompts);
        var lm = Prompts.Select(p => processor.Tokenizer.Encode(p)).ToList();
        Assert.All(lm, r => Assert.Equal(2, r[0]));                                           // </s> is Vicuna's BOS here
        int prefix = imageTokens ? config.NumQueryTokens : 0, width = lm.Max(r => r.Count);
        for (int b = 0; b < Prompts.Length; b++)
        {
            int padding = width - lm[b].Count;
            long[] expected = [.. Enumerable.Repeat((long)(config.ImageTokenIndex ?? 0), prefix), .. Enumerable.Repeat(32000L, padding), .. lm[b]];
            output.WriteLine($"row {b}: {string.Join(",", Row(inputs.InputIds, b))}");
            Assert.Equal(expected, Row(inputs.InputIds, b));
            Assert.Equal([.. Enumerable.Repeat(1L, prefix), .. Enumerable.Repeat(0L, padding), .. Enumerable.Repeat(1L, lm[b].Count)], Row(inputs.AttentionMask, b));
        }
        var bert = Prompts.Select(p => processor.QformerTokenizer.Encode(p)).ToList();
        int qWidth = bert.Max(r => r.Count);
        for (int b = 0; b < Prompts.Length; b++)
        {
            Assert.Equal(processor.QformerTokenizer.Encode("")[0], bert[b][0]);                   // [CLS]
            Assert.Equal([.. bert[b], .. Enumerable.Repeat(processor.QformerTokenizer.PadTokenId!.Value, qWidth - bert[b].Count)], Row(inputs.QformerInputIds, b));
            Assert.Equal([.. Enumerable.Repeat(1L, bert[b].Count), .. Enumerable.Repeat(0L, qWidth - bert[b].Count)], Row(inputs.QformerAttentionMask, b));
        }
        Assert.Equal(new long[] { Prompts.Length, 3, 224, 224 }, inputs.PixelValues.shape);
    }

    [Fact]
    public void FlanT5_prompts_end_with_eos_and_are_right_padded()
    {
        using var folder = Folder("instructblip-t5", t5: true);
        var config = InstructBlipConfig.Load(Path.Combine(folder.Path, "config.json"));
        var processor = InstructBlipProcessor.FromFolder(folder.Path, config);
        using var inputs = processor.Process(Images, Prompts);
        var lm = Prompts.Select(p => processor.Tokenizer.Encode(p)).ToList();
        int width = lm.Max(r => r.Count);
        for (int b = 0; b < Prompts.Length; b++)
        {
            Assert.Equal(1, lm[b][^1]);                                                          // </s>
            Assert.Equal([.. lm[b], .. Enumerable.Repeat(0L, width - lm[b].Count)], Row(inputs.InputIds, b));
        }
    }
}
