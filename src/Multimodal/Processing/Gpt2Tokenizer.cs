using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using Microsoft.ML.Tokenizers;

namespace Multimodal.Processing;

/// <summary>The byte-level BPE tokenizers of transformers v4.45.1 <c>GPT2TokenizerFast</c> (OPT, BLIP-2 OPT:
/// <c>vocab.json</c> + <c>merges.txt</c>, BOS <c>&lt;/s&gt;</c> prepended) and <c>GPTNeoXTokenizerFast</c>
/// (MPT, RedPajama, every OpenFlamingo v2 LM: <c>tokenizer.json</c>, NFC, its whitespace-run tokens,
/// no BOS): GPT-2's pre-tokenization regex, added tokens matched whole (longest first) before BPE.
/// Built on Microsoft.ML.Tokenizers' <see cref="BpeTokenizer"/>.</summary>
public sealed class Gpt2Tokenizer : ITextTokenizer
{
    // GPT-2's pattern (encoder.py); .NET's \p{L}/\p{N} match the Unicode classes the Rust regex uses.
    private static readonly Regex Pattern = new(
        @"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+", RegexOptions.Compiled);

    private readonly BpeTokenizer _bpe;
    private readonly Dictionary<long, byte[]> _bytes;
    private readonly Dictionary<long, string> _added;
    private readonly Dictionary<string, int> _addedByText;
    private readonly long? _bos;
    private readonly bool _nfc;

    /// <inheritdoc/>
    public IReadOnlySet<long> SpecialIds { get; }

    /// <inheritdoc/>
    public long? PadTokenId { get; }

    /// <inheritdoc/>
    public int LongestTokenBytes => _longest ??= Math.Max(_bytes.Values.Max(b => b.Length), _added.Values.Select(System.Text.Encoding.UTF8.GetByteCount).DefaultIfEmpty(0).Max());
    private int? _longest;

    private Gpt2Tokenizer(Dictionary<string, int> vocab, IEnumerable<string> merges, Dictionary<string, int> added,
        IReadOnlySet<long> special, long? bos, long? pad, bool nfc = false)
    {
        _bpe = BpeTokenizer.Create(new BpeOptions(vocab)
        {
            Merges = merges,
            ByteLevel = true,
            PreTokenizer = new RegexPreTokenizer(Pattern, null),
        });
        _addedByText = added;
        _nfc = nfc;
        var unicodeToByte = ByteLevelAlphabet();
        _bytes = vocab.ToDictionary(kv => (long)kv.Value, kv => kv.Key.Select(c => unicodeToByte[c]).ToArray());
        _added = added.ToDictionary(kv => (long)kv.Value, kv => kv.Key);
        SpecialIds = special;
        _bos = bos;
        PadTokenId = pad;
    }

    /// <summary>Reads <c>vocab.json</c>, <c>merges.txt</c> and the optional <c>added_tokens.json</c>,
    /// <c>special_tokens_map.json</c> and <c>tokenizer_config.json</c> of a folder.</summary>
    /// <exception cref="FileNotFoundException">vocab.json or merges.txt is missing.</exception>
    /// <exception cref="InvalidDataException">a file is malformed.</exception>
    public static Gpt2Tokenizer FromFolder(string folder)
    {
        string Path_(string name) => System.IO.Path.Combine(folder, name);
        foreach (var required in new[] { "vocab.json", "merges.txt" })
            if (!File.Exists(Path_(required)))
                throw new FileNotFoundException($"Tokenizer folder '{folder}' has no {required}.", Path_(required));
        var vocab = ReadJson<Dictionary<string, int>>(Path_("vocab.json"));
        var merges = File.ReadLines(Path_("merges.txt")).Where(l => l.Length > 0 && !l.StartsWith("#version", StringComparison.Ordinal)).ToList();

        // Added tokens: added_tokens.json, tokenizer_config's added_tokens_decoder and the special tokens
        // map; all are matched whole before BPE, as the fast tokenizer's added-token trie does.
        var added = new Dictionary<string, int>(StringComparer.Ordinal);
        var special = new HashSet<long>();
        if (File.Exists(Path_("added_tokens.json")))
            foreach (var (token, id) in ReadJson<Dictionary<string, int>>(Path_("added_tokens.json")))
            {
                added[token] = id;
                special.Add(id);
            }
        JsonElement config = default;
        bool addBos = true;
        if (File.Exists(Path_("tokenizer_config.json")))
        {
            config = ReadJson<JsonElement>(Path_("tokenizer_config.json"));
            if (config.TryGetProperty("add_bos_token", out var ab) && ab.ValueKind is JsonValueKind.True or JsonValueKind.False) addBos = ab.GetBoolean();
            if (config.TryGetProperty("added_tokens_decoder", out var decoder) && decoder.ValueKind == JsonValueKind.Object)
                foreach (var entry in decoder.EnumerateObject())
                {
                    int id = int.Parse(entry.Name, System.Globalization.CultureInfo.InvariantCulture);
                    added[entry.Value.GetProperty("content").GetString()!] = id;
                    if (!entry.Value.TryGetProperty("special", out var sp) || sp.GetBoolean()) special.Add(id);
                }
        }
        string? TokenOf(string key)
        {
            JsonElement source = config;
            if (File.Exists(Path_("special_tokens_map.json")))
            {
                var map = ReadJson<JsonElement>(Path_("special_tokens_map.json"));
                if (map.TryGetProperty(key, out var v)) source = map;
            }
            if (source.ValueKind != JsonValueKind.Object || !source.TryGetProperty(key, out var value)) return null;
            return value.ValueKind == JsonValueKind.String ? value.GetString()
                 : value.ValueKind == JsonValueKind.Object ? value.GetProperty("content").GetString() : null;
        }
        long? IdOf(string? token) => token is null ? null
            : added.TryGetValue(token, out var a) ? a : vocab.TryGetValue(token, out var v) ? v : null;
        foreach (var key in new[] { "bos_token", "eos_token", "unk_token", "pad_token" })
            if (TokenOf(key) is string token && IdOf(token) is long id)
            {
                added[token] = (int)id;
                special.Add(id);
            }
        long? bos = addBos ? IdOf(TokenOf("bos_token")) : null;
        return new Gpt2Tokenizer(vocab, merges, added, special, bos, IdOf(TokenOf("pad_token")));
    }

    private static T ReadJson<T>(string path)
    {
        try
        {
            return JsonSerializer.Deserialize<T>(File.ReadAllText(path))
                   ?? throw new InvalidDataException($"Tokenizer file '{path}' holds JSON null.");
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"Tokenizer file '{path}' is not valid JSON: {e.Message}", e);
        }
    }

    /// <summary>Reads a GPT-NeoX <c>tokenizer.json</c> (BPE model, added tokens, NFC) and appends
    /// <paramref name="extraSpecialTokens"/> after the vocabulary, as OpenFlamingo's factory adds
    /// <c>&lt;|endofchunk|&gt;</c>, <c>&lt;image&gt;</c> and <c>&lt;PAD&gt;</c>.</summary>
    public static Gpt2Tokenizer FromTokenizerJson(string path, IReadOnlyList<string>? extraSpecialTokens = null, string? padToken = null)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"Tokenizer file '{path}' does not exist.", path);
        var root = ReadJson<JsonElement>(path);
        var model = root.GetProperty("model");
        if (model.GetProperty("type").GetString() != "BPE")
            throw new InvalidDataException($"{path}: model type {model.GetProperty("type").GetString()} is not BPE.");
        var vocab = model.GetProperty("vocab").Deserialize<Dictionary<string, int>>()!;
        var merges = model.GetProperty("merges").EnumerateArray()
            .Select(m => m.ValueKind == JsonValueKind.String ? m.GetString()! : string.Join(" ", m.EnumerateArray().Select(x => x.GetString()))).ToList();
        var added = new Dictionary<string, int>(StringComparer.Ordinal);
        var special = new HashSet<long>();
        foreach (var token in root.GetProperty("added_tokens").EnumerateArray())
        {
            int id = token.GetProperty("id").GetInt32();
            added[token.GetProperty("content").GetString()!] = id;
            if (token.GetProperty("special").GetBoolean()) special.Add(id);
        }
        int next = Math.Max(vocab.Values.Max(), added.Values.DefaultIfEmpty(0).Max()) + 1;
        foreach (var extra in extraSpecialTokens ?? [])
            if (!added.ContainsKey(extra))
            {
                added[extra] = next;
                special.Add(next++);
            }
        bool nfc = root.TryGetProperty("normalizer", out var n) && n.ValueKind == JsonValueKind.Object && n.GetProperty("type").GetString() == "NFC";
        long? pad = padToken is not null && added.TryGetValue(padToken, out var p) ? p : null;
        return new Gpt2Tokenizer(vocab, merges, added, special, bos: null, pad, nfc);
    }

    /// <summary>Every token id by its text: vocabulary and added tokens.</summary>
    public IReadOnlyDictionary<string, int> AddedTokenIds => _addedByText;

    /// <inheritdoc/>
    public IReadOnlyList<long> Encode(string text, bool addSpecialTokens = true)
    {
        ArgumentNullException.ThrowIfNull(text);
        text = UnicodeText.WithoutLoneSurrogates(text);
        if (_nfc) text = UnicodeText.Normalize(text, System.Text.NormalizationForm.FormC);
        var ids = new List<long>();
        if (addSpecialTokens && _bos is long bos) ids.Add(bos);
        foreach (var (segment, id) in AddedTokens.Split(text, _addedByText))
        {
            if (id is int added) ids.Add(added);
            else ids.AddRange(_bpe.EncodeToIds(segment).Select(i => (long)i));
        }
        return ids;
    }

    /// <inheritdoc/>
    public string Decode(IEnumerable<long> ids, bool skipSpecialTokens = true)
    {
        var decoder = CreateStreamingDecoder(skipSpecialTokens);
        var text = new StringBuilder();
        foreach (var id in ids) text.Append(decoder.Push(id));
        return text.Append(decoder.Flush()).ToString();
    }

    /// <inheritdoc/>
    public IStreamingDecoder CreateStreamingDecoder(bool skipSpecialTokens = true) => new ByteLevelStreamingDecoder(this, skipSpecialTokens);

    /// <summary>GPT-2's <c>bytes_to_unicode</c>: the vocabulary character that stands for each byte (index = byte).
    /// Needed to write byte-level BPE vocabularies.</summary>
    public static IReadOnlyList<char> ByteLevelCharacters { get; } =
        ByteLevelAlphabet().OrderBy(kv => kv.Value).Select(kv => kv.Key).ToArray();

    /// <summary>GPT-2's <c>bytes_to_unicode</c>, inverted: printable bytes map to themselves, the rest to
    /// U+0100 upwards, so every byte has a visible character in the vocabulary.</summary>
    private static Dictionary<char, byte> ByteLevelAlphabet()
    {
        var result = new Dictionary<char, byte>();
        int next = 256;
        for (int b = 0; b < 256; b++)
        {
            bool printable = b is >= '!' and <= '~' or >= 0xA1 and <= 0xAC or >= 0xAE and <= 0xFF;
            result[(char)(printable ? b : next++)] = (byte)b;
        }
        return result;
    }

    private sealed class ByteLevelStreamingDecoder(Gpt2Tokenizer owner, bool skipSpecial) : IStreamingDecoder
    {
        private readonly List<byte> _pending = [];
        private static readonly UTF8Encoding Utf8 = new(false, false);

        public string Push(long id)
        {
            if (owner._added.TryGetValue(id, out var addedText))
            {
                if (skipSpecial && owner.SpecialIds.Contains(id)) return "";
                return Flush() + addedText;
            }
            if (!owner._bytes.TryGetValue(id, out var bytes))
                throw new ArgumentOutOfRangeException(nameof(id), $"token id {id} is not in the vocabulary.");
            _pending.AddRange(bytes);
            int complete = CompletePrefix(_pending);
            if (complete == 0) return "";
            var text = Utf8.GetString(_pending.GetRange(0, complete).ToArray());
            _pending.RemoveRange(0, complete);
            return text;
        }

        public string Flush()
        {
            if (_pending.Count == 0) return "";
            var text = Utf8.GetString(_pending.ToArray());
            _pending.Clear();
            return text;
        }

        // Length of the prefix that ends on a character boundary: a trailing lead byte whose
        // continuation bytes have not all arrived is held back.
        private static int CompletePrefix(List<byte> bytes)
        {
            int n = bytes.Count;
            for (int back = 1; back <= Math.Min(3, n); back++)
            {
                byte b = bytes[n - back];
                if ((b & 0xC0) == 0x80) continue;           // continuation byte: look further back
                int need = b >= 0xF0 ? 4 : b >= 0xE0 ? 3 : b >= 0xC0 ? 2 : 1;
                return need > back ? n - back : n;
            }
            return n;
        }
    }
}
