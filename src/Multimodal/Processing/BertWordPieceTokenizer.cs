using System.Globalization;
using System.Text;

namespace Multimodal.Processing;

/// <summary>transformers v4.45.1 <c>BertTokenizerFast</c> for bert-base-uncased, the Q-Former's text
/// tokenizer: BERT's basic tokenization (clean-up, CJK characters split, lower case, accents stripped,
/// punctuation split), greedy longest-match WordPiece, <c>[CLS] … [SEP]</c>; LAVIS appends <c>[DEC]</c>
/// (30522). Decoding joins "##" pieces and applies <c>clean_up_tokenization</c>.</summary>
/// <remarks>Written here rather than on Microsoft.ML.Tokenizers: its 2.0.1 <c>BertTokenizer</c> drops some
/// ASCII symbols (<c>&lt;</c>, <c>&gt;</c>, <c>$</c>) that BERT keeps as punctuation; 15 of the 47 reference
/// strings differed.</remarks>
public sealed class BertWordPieceTokenizer : ITextTokenizer
{
    private readonly Dictionary<string, int> _vocab;
    private readonly string[] _byId;
    private readonly Dictionary<string, int> _special;
    private readonly int _unk;

    /// <inheritdoc/>
    public IReadOnlySet<long> SpecialIds { get; }

    /// <inheritdoc/>
    public long? PadTokenId => _special["[PAD]"];

    /// <inheritdoc/>
    public int LongestTokenBytes => _longest ??= _byId.Max(System.Text.Encoding.UTF8.GetByteCount);
    private int? _longest;

    private BertWordPieceTokenizer(string[] lines, Dictionary<string, int> special)
    {
        _byId = lines.Concat(special.Where(kv => kv.Value >= lines.Length).OrderBy(kv => kv.Value).Select(kv => kv.Key)).ToArray();
        _vocab = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int i = 0; i < lines.Length; i++) _vocab.TryAdd(lines[i], i);
        _special = special;
        _unk = special["[UNK]"];
        SpecialIds = special.Values.Select(v => (long)v).ToHashSet();
    }

    /// <summary>Reads <c>vocab.txt</c>; <paramref name="extraSpecialTokens"/> are appended after it (LAVIS: <c>[DEC]</c>).</summary>
    public static BertWordPieceTokenizer FromVocab(string path, IReadOnlyList<string>? extraSpecialTokens = null)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"Vocabulary '{path}' does not exist.", path);
        var lines = File.ReadAllLines(path);
        var special = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var token in new[] { "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]" })
        {
            int id = Array.IndexOf(lines, token);
            special[token] = id >= 0 ? id : throw new InvalidDataException($"'{path}' has no {token}.");
        }
        int next = lines.Length;
        foreach (var extra in extraSpecialTokens ?? []) special.TryAdd(extra, next++);
        return new BertWordPieceTokenizer(lines, special);
    }

    /// <inheritdoc/>
    public IReadOnlyList<long> Encode(string text, bool addSpecialTokens = true)
    {
        ArgumentNullException.ThrowIfNull(text);
        text = UnicodeText.WithoutLoneSurrogates(text);
        var ids = new List<long>();
        if (addSpecialTokens) ids.Add(_special["[CLS]"]);
        foreach (var (segment, id) in AddedTokens.Split(text, _special))
        {
            if (id is int s) { ids.Add(s); continue; }
            foreach (var word in BasicTokens(segment)) ids.AddRange(WordPiece(word));
        }
        if (addSpecialTokens) ids.Add(_special["[SEP]"]);
        return ids;
    }

    // tokenizers' BertNormalizer + BertPreTokenizer, in their order: drop controls and format characters, whitespace to
    // spaces, spaces around CJK ideographs; NFD without non-spacing marks; lower case; then split on whitespace and
    // around punctuation. Marks, format characters and punctuation are the Rust library's (BertUnicode).
    private static IEnumerable<string> BasicTokens(string text)
    {
        var cleaned = new StringBuilder();
        foreach (var rune in text.EnumerateRunes())
        {
            int cp = rune.Value;
            if (cp == 0 || cp == 0xFFFD || (IsControl(rune) && cp is not ('\t' or '\n' or '\r'))) continue;
            if (Rune.IsWhiteSpace(rune)) { cleaned.Append(' '); continue; }
            if (IsCjk(cp)) cleaned.Append(' ').Append(rune.ToString()).Append(' ');
            else cleaned.Append(rune.ToString());
        }
        var stripped = new StringBuilder();
        foreach (var rune in UnicodeText.Normalize(cleaned.ToString(), NormalizationForm.FormD).EnumerateRunes())
            if (!BertUnicode.IsNonSpacingMark(rune.Value, Rune.GetUnicodeCategory(rune))) stripped.Append(rune.ToString());
        foreach (var chunk in Lower(stripped.ToString()).Split(' ', StringSplitOptions.RemoveEmptyEntries))
        {
            var word = new StringBuilder();
            foreach (var rune in chunk.EnumerateRunes())
            {
                if (IsPunctuation(rune))
                {
                    if (word.Length > 0) { yield return word.ToString(); word.Clear(); }
                    yield return rune.ToString();
                }
                else word.Append(rune.ToString());
            }
            if (word.Length > 0) yield return word.ToString();
        }
    }

    /// <summary>The fast tokenizer's lower case: each character's full lowercase mapping on its own (Rust's
    /// <c>char::to_lowercase</c>), where .NET's invariant lowering is the simple one — U+0130 İ becomes "i" + U+0307.
    /// No context: a capital sigma is always σ (Python's <c>str.lower</c>, which the slow tokenizer uses, gives the final
    /// ς at the end of a word; transformers loads the fast one).</summary>
    internal static string Lower(string text)
    {
        var lowered = new StringBuilder(text.Length);
        foreach (var rune in text.EnumerateRunes())
            if (rune.Value == 0x0130) lowered.Append("i\u0307");
            else lowered.Append(Rune.ToLowerInvariant(rune).ToString());
        return lowered.ToString();
    }

    // Greedy longest-match-first; a word with an unmatchable remainder, or longer than 100 characters (code points,
    // not UTF-16 units), is [UNK].
    private IEnumerable<long> WordPiece(string word)
    {
        if (word.Length > 100 && word.EnumerateRunes().Count() > 100) return [_unk];
        var pieces = new List<long>();
        for (int start = 0; start < word.Length;)
        {
            int end = word.Length, found = -1;
            while (end > start)
            {
                string piece = (start > 0 ? "##" : "") + word[start..end];
                if (_vocab.TryGetValue(piece, out var id)) { found = id; break; }
                end--;
            }
            if (found < 0) return [_unk];
            pieces.Add(found);
            start = end;
        }
        return pieces;
    }

    // Cc, Cf, Co, Cs; unassigned code points (Cn) stay and become [UNK].
    private static bool IsControl(Rune r) => Rune.GetUnicodeCategory(r) switch
    {
        UnicodeCategory.Control or UnicodeCategory.PrivateUse or UnicodeCategory.Surrogate => true,
        UnicodeCategory.Format => BertUnicode.IsFormat(r.Value),
        _ => false,
    };

    private static bool IsPunctuation(Rune r)
    {
        int cp = r.Value;
        if (cp is >= 33 and <= 47 or >= 58 and <= 64 or >= 91 and <= 96 or >= 123 and <= 126) return true;
        return BertUnicode.IsPunctuation(cp, Rune.GetUnicodeCategory(r) is UnicodeCategory.ConnectorPunctuation or UnicodeCategory.DashPunctuation
            or UnicodeCategory.OpenPunctuation or UnicodeCategory.ClosePunctuation or UnicodeCategory.InitialQuotePunctuation
            or UnicodeCategory.FinalQuotePunctuation or UnicodeCategory.OtherPunctuation);
    }

    // tokenizers' is_chinese_char: BERT's ranges, with extension F written from 0x2B920 (the Python original has 0x2B820).
    private static bool IsCjk(int cp) => cp is >= 0x4E00 and <= 0x9FFF or >= 0x3400 and <= 0x4DBF or >= 0x20000 and <= 0x2A6DF
        or >= 0x2A700 and <= 0x2B73F or >= 0x2B740 and <= 0x2B81F or >= 0x2B920 and <= 0x2CEAF or >= 0xF900 and <= 0xFAFF
        or >= 0x2F800 and <= 0x2FA1F;

    /// <inheritdoc/>
    public string Decode(IEnumerable<long> ids, bool skipSpecialTokens = true)
    {
        var text = new StringBuilder();
        foreach (var id in ids)
        {
            if (skipSpecialTokens && SpecialIds.Contains(id)) continue;
            string token = id >= 0 && id < _byId.Length ? _byId[id] : "[UNK]";
            if (token.StartsWith("##", StringComparison.Ordinal)) text.Append(token, 2, token.Length - 2);
            else { if (text.Length > 0) text.Append(' '); text.Append(token); }
        }
        return CleanUp(text.ToString());
    }

    // transformers' clean_up_tokenization.
    private static string CleanUp(string s) => s
        .Replace(" .", ".").Replace(" ?", "?").Replace(" !", "!").Replace(" ,", ",").Replace(" ' ", "'")
        .Replace(" n't", "n't").Replace(" 'm", "'m").Replace(" 's", "'s").Replace(" 've", "'ve").Replace(" 're", "'re");

    /// <inheritdoc/>
    public IStreamingDecoder CreateStreamingDecoder(bool skipSpecialTokens = true) => new Streaming(this, skipSpecialTokens);

    // Nothing generates BERT text (the Q-Former only reads it), and clean_up_tokenization joins across
    // several words (" ' " needs both neighbours): the text is produced whole at Flush.
    private sealed class Streaming(BertWordPieceTokenizer owner, bool skip) : IStreamingDecoder
    {
        private readonly List<long> _ids = [];

        public string Push(long id)
        {
            _ids.Add(id);
            return "";
        }

        public string Flush()
        {
            var text = owner.Decode(_ids, skip);
            _ids.Clear();
            return text;
        }
    }
}
