using System.Text;

namespace Multimodal.Processing;

/// <summary>Text a client sent, made safe for the tokenizers: normalization that never throws, no lone surrogates. .NET's <see cref="string.Normalize()"/>
/// refuses U+FFFE and unpaired surrogates with an ArgumentException, where the Rust normalizers of the fast tokenizers
/// keep U+FFFE as it is (it is a starter that composes with nothing, so the text either side normalizes on its own) and
/// never see a lone surrogate; those become U+FFFD, as they would on the way to UTF-8.</summary>
internal static class UnicodeText
{
    /// <summary><paramref name="text"/> in <paramref name="form"/>, normalized around each U+FFFE, lone surrogates read
    /// as U+FFFD.</summary>
    public static string Normalize(string text, NormalizationForm form)
    {
        text = WithoutLoneSurrogates(text);
        return text.Contains('\uFFFE') ? string.Join('\uFFFE', text.Split('\uFFFE').Select(part => part.Normalize(form))) : text.Normalize(form);
    }

    /// <summary><paramref name="text"/> with each unpaired surrogate replaced by U+FFFD, as UTF-8 encoding would: every
    /// tokenizer sees it so, whatever path (byte fallback, normalization) the character would take.</summary>
    public static string WithoutLoneSurrogates(string text)
    {
        char[]? chars = null;
        for (int i = 0; i < text.Length; i++)
        {
            if (!char.IsSurrogate(text[i])) continue;
            if (char.IsHighSurrogate(text[i]) && i + 1 < text.Length && char.IsLowSurrogate(text[i + 1])) { i++; continue; }
            (chars ??= text.ToCharArray())[i] = '\uFFFD';
        }
        return chars is null ? text : new string(chars);
    }
}
