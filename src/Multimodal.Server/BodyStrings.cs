using System.Buffers;
using System.Text.Json;

namespace Multimodal.Server;

/// <summary>A request body parsed without System.Text.Json renting memory in proportion to it. JsonDocument and
/// JsonElement.ParseValue rent their buffers from the shared ArrayPool at the body's length (32 MiB for a 19 MB body),
/// and the pool keeps such arrays per thread long after the request. A body over <see cref="CompactFrom"/> is therefore
/// parsed with its long strings (images, texts) left where they are, in the body's native memory: the document gets a
/// short marker in their place, and <see cref="TryGetRaw"/> and <see cref="GetString"/> read them from the body.</summary>
public sealed class BodyStrings
{
    /// <summary>Bodies larger than this are parsed with their long strings left out (smaller ones rent at most 1 MB).</summary>
    public const int CompactFrom = 4 << 20;

    /// <summary>A string value longer than this (in the body's bytes) is left in the body.</summary>
    public const int LongString = 16 << 10;

    // A nonce per body: a client cannot write a marker that names one of the strings.
    private readonly string _nonce = Guid.NewGuid().ToString("N");
    private readonly ReadOnlyMemory<byte> _body;
    private readonly List<(int Start, int Length)> _strings = [];

    private BodyStrings(ReadOnlyMemory<byte> body) => _body = body;

    /// <summary>Parses <paramref name="body"/>: as it is when small, otherwise with its long strings replaced by markers.</summary>
    /// <exception cref="JsonException">not one valid JSON value.</exception>
    public static (JsonElement Root, BodyStrings? Strings) Parse(ReadOnlyMemory<byte> body)
    {
        var reader = new Utf8JsonReader(body.Span);
        if (body.Length <= CompactFrom)
        {
            var root = JsonElement.ParseValue(ref reader);
            if (reader.Read()) throw new JsonException("There is more after the JSON value.");
            return (root, null);
        }
        var strings = new BodyStrings(body);
        var output = new ArrayBufferWriter<byte>();
        using (var writer = new Utf8JsonWriter(output, new JsonWriterOptions { SkipValidation = true }))
        {
            try
            {
                while (reader.Read())
                    switch (reader.TokenType)
                    {
                        case JsonTokenType.StartObject: writer.WriteStartObject(); break;
                        case JsonTokenType.EndObject: writer.WriteEndObject(); break;
                        case JsonTokenType.StartArray: writer.WriteStartArray(); break;
                        case JsonTokenType.EndArray: writer.WriteEndArray(); break;
                        case JsonTokenType.PropertyName: writer.WritePropertyName(reader.GetString()!); break;
                        case JsonTokenType.String when reader.ValueSpan.Length > LongString:
                            // The token starts at its opening quote; its raw bytes follow, then the closing quote.
                            strings._strings.Add((checked((int)reader.TokenStartIndex), reader.ValueSpan.Length + 2));
                            writer.WriteStringValue(strings._nonce + ":" + (strings._strings.Count - 1));
                            break;
                        case JsonTokenType.String: writer.WriteStringValue(reader.GetString()); break;
                        case JsonTokenType.Number: writer.WriteRawValue(reader.ValueSpan, skipInputValidation: true); break;
                        case JsonTokenType.True: writer.WriteBooleanValue(true); break;
                        case JsonTokenType.False: writer.WriteBooleanValue(false); break;
                        case JsonTokenType.Null: writer.WriteNullValue(); break;
                    }
            }
            catch (InvalidOperationException e)
            {
                throw new JsonException(e.Message, e);   // a string escape that is not valid UTF-16
            }
        }
        // What is left must be small too, or its parse would rent its length again: a body that is large for any other
        // reason than its strings (a 20 MB array of numbers) is no request this server takes.
        if (output.WrittenCount > CompactFrom)
            throw new JsonException($"Only images and texts may make a request body larger than {CompactFrom >> 20} MB; " +
                                    $"without them this one is still {output.WrittenCount} bytes.");
        var compact = new Utf8JsonReader(output.WrittenSpan);
        return (JsonElement.ParseValue(ref compact), strings);
    }

    /// <summary>The raw bytes of a string value left in the body (escapes as written, no quotes), or false when
    /// <paramref name="value"/> is an ordinary string of the document.</summary>
    public bool TryGetRaw(JsonElement value, out ReadOnlySpan<byte> raw)
    {
        raw = default;
        if (Index(value) is not int index) return false;
        var (start, length) = _strings[index];
        raw = _body.Span.Slice(start + 1, length - 2);
        return true;
    }

    /// <summary>The string <paramref name="value"/> stands for, read from the body when it was left there.</summary>
    public string GetString(JsonElement value)
    {
        if (Index(value) is not int index) return value.GetString()!;
        var (start, length) = _strings[index];
        var reader = new Utf8JsonReader(_body.Span.Slice(start, length));
        reader.Read();
        return reader.GetString()!;
    }

    /// <summary>The UTF-8 bytes, escapes resolved, of a string value left in the body (no UTF-16 copy), or null when
    /// <paramref name="value"/> is an ordinary string of the document.</summary>
    public ReadOnlyMemory<byte>? GetUtf8(JsonElement value)
    {
        if (Index(value) is not int index) return null;
        var (start, length) = _strings[index];
        var reader = new Utf8JsonReader(_body.Span.Slice(start, length));
        reader.Read();
        var bytes = new byte[reader.ValueSpan.Length];                      // unescaping never lengthens
        return bytes.AsMemory(0, reader.CopyString(bytes));
    }

    /// <summary>A string value's bytes as written (escapes included, no quotes), from the body when
    /// <paramref name="strings"/> left it there.</summary>
    public static ReadOnlySpan<byte> Raw(BodyStrings? strings, JsonElement value) =>
        strings is not null && strings.TryGetRaw(value, out var raw) ? raw : RawContent(value);

    /// <summary>A string value, read from the body when <paramref name="strings"/> left it there.</summary>
    public static string String(BodyStrings? strings, JsonElement value) => strings?.GetString(value) ?? value.GetString()!;

    /// <summary>A string element's bytes as written in the JSON, escapes included, without its quotes.</summary>
    public static ReadOnlySpan<byte> RawContent(JsonElement value) =>
        System.Runtime.InteropServices.JsonMarshal.GetRawUtf8Value(value) is { Length: >= 2 } raw ? raw[1..^1] : default;

    private int? Index(JsonElement value)
    {
        if (value.ValueKind != JsonValueKind.String) return null;
        var raw = RawContent(value);
        if (raw.Length > 48 || raw.Length <= _nonce.Length || raw[_nonce.Length] != ':' || !System.Text.Ascii.Equals(raw[.._nonce.Length], _nonce))
            return null;
        return int.TryParse(raw[(_nonce.Length + 1)..], out int index) && index >= 0 && index < _strings.Count ? index : null;
    }
}
