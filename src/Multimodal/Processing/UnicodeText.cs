using System.Text;

namespace Multimodal.Processing;

/// <summary>Text a client sent, made safe for the tokenizers: normalization that never throws, no lone surrogates. .NET's <see cref="string.Normalize()"/>
/// refuses U+FFFE and unpaired surrogates with an ArgumentException, where the Rust normalizers of the fast tokenizers
/// keep U+FFFE as it is (it is a starter that composes with nothing, so the text either side normalizes on its own) and
/// never see a lone surrogate; those become U+FFFD, as they would on the way to UTF-8.</summary>
internal static class UnicodeText
{
    /// <summary><paramref name="text"/> in <paramref name="form"/>.</summary>
    public static string Normalize(string text, NormalizationForm form)
    {
        int bad = IndexOfUnnormalizable(text, 0);
        if (bad < 0) return text.Normalize(form);
        var output = new StringBuilder(text.Length);
        int start = 0;
        for (; bad >= 0; bad = IndexOfUnnormalizable(text, start))
        {
            output.Append(text.AsSpan(start, bad - start).ToString().Normalize(form));
            output.Append(text[bad] == '\uFFFE' ? '\uFFFE' : '\uFFFD');
            start = bad + 1;
        }
        return output.Append(text[start..].Normalize(form)).ToString();
    }

    /// <summary><paramref name="text"/> with each unpaired surrogate replaced by U+FFFD, as UTF-8 encoding would: every
    /// tokenizer sees it so, whatever path (byte fallback, normalization) the character would take.</summary>
    public static string WithoutLoneSurrogates(string text)
    {
        int i = 0;
        for (; i < text.Length; i++)
        {
            if (!char.IsSurrogate(text[i])) continue;
            if (char.IsHighSurrogate(text[i]) && i + 1 < text.Length && char.IsLowSurrogate(text[i + 1])) { i++; continue; }
            break;
        }
        if (i == text.Length) return text;
        var chars = text.ToCharArray();
        for (; i < chars.Length; i++)
        {
            if (!char.IsSurrogate(chars[i])) continue;
            if (char.IsHighSurrogate(chars[i]) && i + 1 < chars.Length && char.IsLowSurrogate(chars[i + 1])) { i++; continue; }
            chars[i] = '\uFFFD';
        }
        return new string(chars);
    }

    private static int IndexOfUnnormalizable(string text, int from)
    {
        for (int i = from; i < text.Length; i++)
        {
            char c = text[i];
            if (c == '\uFFFE') return i;
            if (char.IsHighSurrogate(c))
            {
                if (i + 1 < text.Length && char.IsLowSurrogate(text[i + 1])) { i++; continue; }
                return i;
            }
            if (char.IsLowSurrogate(c)) return i;
        }
        return -1;
    }
}
