using Multimodal.Blip2;
using Multimodal.Common;
using Multimodal.Generation;
using Multimodal.Tests.TestSupport;
using static TorchSharp.torch;

namespace Multimodal.Tests.Generation;

/// <summary><c>generation_config.json</c> supplies what the caller leaves unset, key by key, as transformers'
/// <c>generate(**kwargs)</c> does; results say why each row stopped.</summary>
public sealed class GenerationDefaultsTests : IDisposable
{
    private readonly TempDir _temp = new();

    public void Dispose() => _temp.Dispose();

    private GenerationConfig Parse(string json)
    {
        string path = Path.Combine(_temp.Path, GenerationConfig.FileName);
        File.WriteAllText(path, json);
        return GenerationConfig.Load(path);
    }

    [Fact]
    public void The_file_is_read_with_upstream_names_and_forms()
    {
        var config = Parse("""
            {"_from_model_config": true, "max_length": 30, "num_beams": 5, "early_stopping": "never", "eos_token_id": [2, 50118],
             "pad_token_id": 1, "bos_token_id": 2, "do_sample": true, "temperature": 0.7, "top_k": 10, "top_p": 0.9,
             "repetition_penalty": 1.5, "length_penalty": -1.0, "min_new_tokens": 2, "transformers_version": "4.45.1"}
            """);
        Assert.Equal(30, config.MaxLength);
        Assert.Equal(5, config.NumBeams);
        Assert.Equal(BeamEarlyStopping.Never, config.EarlyStopping);
        Assert.Equal([2L, 50118], config.EosTokenIds);
        Assert.Equal(1, config.PadTokenId);
        Assert.Equal(2, config.BosTokenId);
        Assert.Equal(0.7, config.Temperature);
        Assert.Equal(-1.0, config.LengthPenalty);
        Assert.Equal(BeamEarlyStopping.Immediate, Parse("""{"early_stopping": true}""").EarlyStopping);
        Assert.Equal([2L], Parse("""{"eos_token_id": 2}""").EosTokenIds);
        Assert.Null(Parse("""{"pad_token_id": -1}""").PadTokenId);   // LLaMA's published "none"
    }

    [Theory]
    [InlineData("""{"num_beams": "four"}""", "\"num_beams\" must be an integer")]
    [InlineData("""{"num_beams": 0}""", "\"num_beams\" must be at least 1")]
    [InlineData("""{"max_new_tokens": 2.5}""", "\"max_new_tokens\" must be an integer")]
    [InlineData("""{"eos_token_id": "two"}""", "\"eos_token_id\" must be an integer id or a list")]
    [InlineData("""{"early_stopping": "sometimes"}""", "\"early_stopping\" must be true, false or \"never\"")]
    [InlineData("""{"pad_token_id": [0, 1]}""", "\"pad_token_id\" must be one integer id")]
    [InlineData("""{"temperature": 0}""", "Temperature must be a positive number")]
    [InlineData("""[1, 2]""", "expected a JSON object")]
    [InlineData("""{"num_beams": 2""", "invalid JSON")]
    public void A_bad_file_names_itself_and_the_key(string json, string expected)
    {
        var e = Assert.Throws<ConfigException>(() => Parse(json));
        Assert.Contains(GenerationConfig.FileName, e.Message);
        Assert.Contains(expected, e.Message);
    }

    [Fact]
    public void The_caller_wins_key_by_key_and_the_length_limit_as_a_whole()
    {
        var defaults = new GenerationConfig { MaxLength = 30, NumBeams = 4, RepetitionPenalty = 1.5, EosTokenIds = [7], PadTokenId = 3 };
        var unset = new GenerationOptions().WithDefaults(defaults);
        Assert.Equal(30, unset.MaxLength);
        Assert.Equal(4, unset.NumBeams);
        Assert.Equal(1.5, unset.RepetitionPenalty);
        Assert.Equal([7L], unset.EosTokenIds);
        Assert.Equal(3, unset.PadTokenId);

        var set = new GenerationOptions { NumBeams = 1, MaxNewTokens = 5, EosTokenIds = [9] }.WithDefaults(defaults);
        Assert.Equal(1, set.NumBeams);                  // explicitly 1 stays 1
        Assert.Equal(5, set.MaxNewTokens);
        Assert.Null(set.MaxLength);                     // the caller's limit replaces the file's
        Assert.Equal([9L], set.EosTokenIds);
        Assert.Equal(1.5, set.RepetitionPenalty);       // unset: from the file
        Assert.Same(set, set.WithDefaults(null));
    }

    [Fact]
    public async Task A_folder_default_applies_and_results_say_why_they_stopped()
    {
        using var folder = TempDir.CopyOf(Repo.ShapesModel);
        File.WriteAllText(Path.Combine(folder.Path, GenerationConfig.FileName), """{"max_new_tokens": 3, "eos_token_id": 2, "pad_token_id": 1}""");
        using var blip2 = Blip2Captioner.FromPretrained(folder.Path);
        var cut = await blip2.CaptionAsync(Repo.Scene1);
        Assert.Equal("a big red", cut.Text);
        Assert.Equal(FinishReason.Length, cut.FinishReason);
        Assert.Equal(3, cut.OutputTokens);

        var whole = await blip2.CaptionAsync(Repo.Scene1, new GenerationOptions { MaxNewTokens = 50 });
        Assert.Equal(FinishReason.EndOfSequence, whole.FinishReason);
        Assert.Equal(2, whole.Ids[^1]);
        Assert.Equal(whole.Ids.Count - 1, whole.OutputTokens);

        var stopped = await blip2.CaptionAsync(Repo.Scene1, new GenerationOptions { MaxNewTokens = 50, StopStrings = ["triangle"] });
        Assert.Equal(FinishReason.StopString, stopped.FinishReason);
        Assert.EndsWith("triangle", stopped.Text);

        var beams = await blip2.CaptionAsync(Repo.Scene1, new GenerationOptions { MaxNewTokens = 50, NumBeams = 3 });
        Assert.Equal(FinishReason.EndOfSequence, beams.FinishReason);
        Assert.Equal(whole.Text, beams.Text);
        var beamsCut = await blip2.CaptionAsync(Repo.Scene1, new GenerationOptions { MaxNewTokens = 4, NumBeams = 3 });
        Assert.Equal(FinishReason.Length, beamsCut.FinishReason);
        Assert.Equal(4, beamsCut.OutputTokens);
    }

    [Fact]
    public void Stop_strings_with_beam_search_are_refused()
    {
        var e = Assert.Throws<ArgumentException>(() => new GenerationOptions { NumBeams = 2, StopStrings = ["."] }.Validate());
        Assert.Contains("beam search", e.Message);
    }

    [Fact]
    public void Asking_for_more_positions_than_OPT_has_is_refused_before_generating()
    {
        using var blip2 = Blip2ForConditionalGeneration.FromPretrained(Repo.ShapesModel);
        using var pixels = zeros(1, 3, 64, 64);
        using var ids = tensor(new long[] { 2 }).unsqueeze(0);
        var e = Assert.Throws<GenerationLengthException>(() => blip2.Generate(pixels, ids, null, new GenerationOptions { MaxNewTokens = 57 }));
        Assert.Equal(("MaxNewTokens", 57, 56), (e.Option, e.Requested, e.Largest));
        Assert.Contains("MaxNewTokens = 56 at most", e.Message);
        using var fits = blip2.Generate(pixels, ids, null, new GenerationOptions { MaxNewTokens = 56, MinNewTokens = 56 });
        Assert.Equal(57, fits.Sequences[0].Length);    // BOS + 56: the last position used is 63
    }
}
