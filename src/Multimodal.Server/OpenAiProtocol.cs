using System.Buffers;
using System.Buffers.Text;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.Extensions.AI;

namespace Multimodal.Server;

/// <summary>An error answered in OpenAI's shape: <c>{"error": {"message", "type", "param", "code"}}</c>.</summary>
public sealed class OpenAiException(int status, string message, string? param = null, string? code = null,
    string type = "invalid_request_error") : Exception(message)
{
    /// <summary>HTTP status.</summary>
    public int Status { get; } = status;
    /// <summary>The request field at fault, when one is.</summary>
    public string? Param { get; } = param;
    /// <summary>A machine-readable code.</summary>
    public string? Code { get; } = code;
    /// <summary>OpenAI's error type.</summary>
    public string Type { get; } = type;

    /// <summary>413: the body is over <see cref="ServerOptions.MaxRequestBodyBytes"/> (Kestrel's own limit, or found while reading).</summary>
    public static OpenAiException BodyTooLarge() =>
        new(413, "The request body is larger than this server accepts (Multimodal:MaxRequestBodyBytes).", code: "request_too_large");

    /// <summary>The response body.</summary>
    public JsonObject Body() => new()
    {
        ["error"] = new JsonObject { ["message"] = Message, ["type"] = Type, ["param"] = Param, ["code"] = Code },
    };
}

/// <summary>A validated <c>POST /v1/chat/completions</c> body.</summary>
/// <param name="Model">model name.</param>
/// <param name="Messages">the conversation, images as <see cref="DataContent"/>.</param>
/// <param name="Options">generation options.</param>
/// <param name="Stream">server-sent events wanted.</param>
/// <param name="IncludeUsage">with <c>stream_options.include_usage</c>: a last chunk carrying usage.</param>
/// <param name="MaxTokensParam">the field that set the length limit (<c>max_tokens</c> or <c>max_completion_tokens</c>),
/// for errors about it; null when the request left it to the model.</param>
public sealed record ChatCompletionRequest(string Model, IReadOnlyList<ChatMessage> Messages, ChatOptions Options, bool Stream, bool IncludeUsage,
    string? MaxTokensParam = null)
{
    /// <summary>The request's images, in order.</summary>
    public IEnumerable<DataContent> Images => Messages.SelectMany(m => m.Contents).OfType<DataContent>();
}

/// <summary>OpenAI's chat-completions protocol (as vLLM's OpenAI server implements it): request parsing with
/// one clear error per bad field, and the response and chunk objects.</summary>
public static class OpenAiProtocol
{
    // Fields that change what is generated and that this server cannot honour: refused by name rather than ignored.
    private static readonly string[] Refused = ["tools", "tool_choice", "functions", "function_call", "logit_bias", "logprobs",
        "top_logprobs", "response_format", "frequency_penalty", "presence_penalty", "audio", "modalities", "prediction"];

    /// <summary>Parses and validates a request body.</summary>
    /// <exception cref="OpenAiException">400 naming the field at fault.</exception>
    /// <param name="body">the request body.</param>
    /// <param name="server">the server's limits.</param>
    /// <param name="maxTextBytes">the longest text the model's positions hold: a longer text part is refused before it is
    /// copied out of the body.</param>
    /// <param name="strings">the long strings a large body's document left in the body (<see cref="BodyStrings"/>).</param>
    public static ChatCompletionRequest ParseChat(JsonElement body, ServerOptions server, long maxTextBytes = long.MaxValue,
        BodyStrings? strings = null)
    {
        if (body.ValueKind != JsonValueKind.Object) throw new OpenAiException(400, "The request body must be a JSON object.");
        string model = RequireString(body, "model");
        foreach (var name in Refused)
            if (body.TryGetProperty(name, out var v) && v.ValueKind is not (JsonValueKind.Null or JsonValueKind.False)
                && !(v.ValueKind == JsonValueKind.Number && v.GetDouble() == 0)
                && !(name == "response_format" && v.ValueKind == JsonValueKind.Object && v.TryGetProperty("type", out var t) && t.ValueEquals("text")))
                throw new OpenAiException(400, $"'{name}' is not supported by this server.", name, "unsupported_parameter");
        if (Optional(body, "n", JsonValueKind.Number) is { } n && (!n.TryGetInt32(out int count) || count != 1))
            throw new OpenAiException(400, "Only n = 1 is supported.", "n", "unsupported_parameter");

        var options = new ChatOptions();
        int? maxTokens = null;
        string? maxTokensParam = null;
        foreach (var key in new[] { "max_completion_tokens", "max_tokens" })
            if (Optional(body, key, JsonValueKind.Number) is { } m)
            {
                if (!m.TryGetInt32(out int value) || value < 1)
                    throw new OpenAiException(400, $"'{key}' must be a positive integer.", key);
                if (value > server.MaxTokensCap)
                    throw new OpenAiException(400, $"'{key}' = {value} exceeds this server's limit of {server.MaxTokensCap}.", key);
                maxTokensParam ??= key;
                maxTokens ??= value;
            }
        options.MaxOutputTokens = maxTokens;   // absent: the model's own generation defaults
        if (Optional(body, "temperature", JsonValueKind.Number) is { } temperature)
        {
            double value = temperature.GetDouble();
            if (value is < 0 or > 2) throw new OpenAiException(400, "'temperature' must be between 0 and 2.", "temperature");
            options.Temperature = (float)value;
        }
        if (Optional(body, "top_p", JsonValueKind.Number) is { } topP)
        {
            double value = topP.GetDouble();
            if (value is <= 0 or > 1) throw new OpenAiException(400, "'top_p' must be in (0, 1].", "top_p");
            options.TopP = (float)value;
        }
        if (Optional(body, "seed", JsonValueKind.Number) is { } seed)
            options.Seed = seed.TryGetInt64(out long s) ? s : throw new OpenAiException(400, "'seed' must be an integer.", "seed");
        if (body.TryGetProperty("stop", out var stop) && stop.ValueKind != JsonValueKind.Null)
        {
            var stops = stop.ValueKind switch
            {
                JsonValueKind.String => [stop.GetString()!],
                JsonValueKind.Array when stop.EnumerateArray().All(e => e.ValueKind == JsonValueKind.String) => stop.EnumerateArray().Select(e => e.GetString()!).ToList(),
                _ => throw new OpenAiException(400, "'stop' must be a string or an array of strings.", "stop"),
            };
            if (stops.Count > 4 || stops.Any(x => x.Length == 0)) throw new OpenAiException(400, "'stop' takes up to 4 non-empty strings.", "stop");
            options.StopSequences = stops;
        }
        bool stream = Optional(body, "stream", JsonValueKind.True, JsonValueKind.False) is { } st && st.GetBoolean();
        bool includeUsage = body.TryGetProperty("stream_options", out var so) && so.ValueKind == JsonValueKind.Object
            && so.TryGetProperty("include_usage", out var iu) && iu.ValueKind == JsonValueKind.True;

        if (!body.TryGetProperty("messages", out var messages) || messages.ValueKind != JsonValueKind.Array || messages.GetArrayLength() == 0)
            throw new OpenAiException(400, "'messages' must be a non-empty array.", "messages");
        var list = new List<ChatMessage>();
        int i = 0;
        foreach (var message in messages.EnumerateArray())
            list.Add(ParseMessage(message, $"messages[{i++}]", server, maxTextBytes, strings));
        var request = new ChatCompletionRequest(model, list, options, stream, includeUsage, maxTokensParam);
        int images = request.Images.Count();
        if (images > server.MaxImagesPerRequest)
            throw new OpenAiException(400, $"The request holds {images} images; this server takes at most {server.MaxImagesPerRequest} (Multimodal:MaxImagesPerRequest).",
                "messages", "too_many_images");
        return request;
    }

    private static ChatMessage ParseMessage(JsonElement message, string path, ServerOptions server, long maxTextBytes, BodyStrings? strings)
    {
        if (message.ValueKind != JsonValueKind.Object) throw new OpenAiException(400, $"'{path}' must be an object.", path);
        string role = RequireString(message, "role", path);
        var chatRole = role switch
        {
            "user" => ChatRole.User,
            "assistant" => ChatRole.Assistant,
            "system" or "developer" => ChatRole.System,
            _ => throw new OpenAiException(400, $"'{path}.role' = \"{role}\" is not supported; expected user, assistant, system or developer.", $"{path}.role"),
        };
        if (!message.TryGetProperty("content", out var content) || content.ValueKind == JsonValueKind.Null)
            throw new OpenAiException(400, $"'{path}.content' is required.", $"{path}.content");
        var contents = new List<AIContent>();
        if (content.ValueKind == JsonValueKind.String) contents.Add(new TextContent(Text(content, $"{path}.content", maxTextBytes, strings)));
        else if (content.ValueKind == JsonValueKind.Array)
        {
            int j = 0;
            foreach (var part in content.EnumerateArray())
                contents.Add(ParsePart(part, $"{path}.content[{j++}]", server, maxTextBytes, strings));
        }
        else throw new OpenAiException(400, $"'{path}.content' must be a string or an array of parts.", $"{path}.content");
        return new ChatMessage(chatRole, contents);
    }

    private static AIContent ParsePart(JsonElement part, string path, ServerOptions server, long maxTextBytes, BodyStrings? strings)
    {
        if (part.ValueKind != JsonValueKind.Object) throw new OpenAiException(400, $"'{path}' must be an object.", path);
        string type = RequireString(part, "type", path);
        switch (type)
        {
            case "text":
                if (!part.TryGetProperty("text", out var text) || text.ValueKind != JsonValueKind.String)
                    throw new OpenAiException(400, $"'{path}.text' must be a string.", $"{path}.text");
                return new TextContent(Text(text, $"{path}.text", maxTextBytes, strings));
            case "image_url":
                if (!part.TryGetProperty("image_url", out var image) || image.ValueKind != JsonValueKind.Object)
                    throw new OpenAiException(400, $"'{path}.image_url' must be an object with a 'url'.", $"{path}.image_url");
                if (!image.TryGetProperty("url", out var url) || url.ValueKind != JsonValueKind.String)
                    throw new OpenAiException(400, $"'{path}.image_url.url' must be a string.", $"{path}.image_url.url");
                return ImageFromUrl(url, $"{path}.image_url.url", server, strings);
            default:
                throw new OpenAiException(400, $"'{path}.type' = \"{type}\" is not supported; expected text or image_url.", $"{path}.type");
        }
    }

    // data: URIs carry the image; file:// only when configured; http(s) never (this server reaches nothing outside).
    // The URI is read as UTF-8 from the body (no UTF-16 copy of a 20 MB data URI) and its base64 decoded straight from it.
    private static DataContent ImageFromUrl(JsonElement value, string param, ServerOptions server, BodyStrings? strings)
    {
        var url = BodyStrings.Raw(strings, value);
        if (url.Contains((byte)'\\')) url = strings?.GetUtf8(value) is { } unescaped ? unescaped.Span : Encoding.UTF8.GetBytes(value.GetString()!);
        if (url.Length >= 5 && Ascii.EqualsIgnoreCase(url[..5], "data:"u8))
        {
            int comma = url.IndexOf((byte)',');
            string header = comma < 0 ? "" : Encoding.ASCII.GetString(url[5..comma]);
            if (comma < 0 || !header.EndsWith(";base64", StringComparison.OrdinalIgnoreCase))
                throw new OpenAiException(400, "Image data URIs must be base64: data:image/png;base64,....", param, "invalid_image_url");
            string mediaType = header[..^7];
            if (mediaType is not ("image/png" or "image/jpeg" or "image/jpg" or "image/webp"))
                throw new OpenAiException(400, $"Image media type '{mediaType}' is not supported; expected image/png, image/jpeg or image/webp.", param, "invalid_image_url");
            var data = url[(comma + 1)..];
            var bytes = new byte[Base64.GetMaxDecodedFromUtf8Length(data.Length)];
            int written;
            if (Base64.DecodeFromUtf8(data, bytes, out _, out written) != OperationStatus.Done)
            {
                // Base64 with white space in it, which Convert accepts and the span decoder does not.
                try { bytes = Convert.FromBase64String(Encoding.ASCII.GetString(data)); written = bytes.Length; }
                catch (FormatException) { throw new OpenAiException(400, "The image data URI is not valid base64.", param, "invalid_image_url"); }
            }
            return new DataContent(bytes.AsMemory(0, written), mediaType == "image/jpg" ? "image/jpeg" : mediaType);
        }
        if (url.Length >= 7 && Ascii.EqualsIgnoreCase(url[..7], "file://"u8))
        {
            if (!server.AllowFileUrls)
                throw new OpenAiException(400, "file:// image URLs are not allowed on this server (Multimodal:AllowFileUrls).", param, "invalid_image_url");
            // The decoder reads the format from the bytes; the media type only marks the content an image.
            return new DataContent(FileUrls.Read(Encoding.UTF8.GetString(url), server, param), "image/png");
        }
        throw new OpenAiException(400, "Only data: image URLs are accepted (this server fetches nothing over the network).", param, "invalid_image_url");
    }

    // A JSON string's raw bytes are its UTF-8 text when it has no escapes, and at most six times it when it has: a text
    // that cannot fit is refused without being copied out of the body.
    private static string Text(JsonElement value, string param, long maxTextBytes, BodyStrings? strings)
    {
        var raw = BodyStrings.Raw(strings, value);
        long bound = raw.Contains((byte)'\\') ? raw.Length / 6 : raw.Length;
        if (bound > maxTextBytes)
            throw new OpenAiException(400, $"'{param}' is longer than this model's positions can hold ({maxTextBytes} bytes of text at most).", param,
                "context_length_exceeded");
        return BodyStrings.String(strings, value);
    }

    private static string RequireString(JsonElement obj, string name, string? path = null)
    {
        string param = path is null ? name : $"{path}.{name}";
        if (!obj.TryGetProperty(name, out var v) || v.ValueKind != JsonValueKind.String)
            throw new OpenAiException(400, $"'{param}' must be a string.", param);
        return v.GetString()!;
    }

    private static JsonElement? Optional(JsonElement obj, string name, params JsonValueKind[] kinds)
    {
        if (!obj.TryGetProperty(name, out var v) || v.ValueKind == JsonValueKind.Null) return null;
        if (!kinds.Contains(v.ValueKind))
            throw new OpenAiException(400, $"'{name}' must be {(kinds[0] is JsonValueKind.True or JsonValueKind.False ? "a boolean" : "a number")}.", name);
        return v;
    }

    /// <summary>Parses <c>POST /v1/embeddings</c>: <c>input</c> is a string or an array of strings, and, as this
    /// server's documented extension, array items may be image parts <c>{"type": "image_url", "image_url": {"url":
    /// "data:..."}}</c> (an image's embedding is its query rows, concatenated). <c>encoding_format</c>: float or base64.</summary>
    /// <exception cref="OpenAiException">400 naming the field at fault.</exception>
    public static (string Model, List<object> Inputs, bool Base64) ParseEmbeddings(JsonElement body, ServerOptions server, BodyStrings? strings = null)
    {
        if (body.ValueKind != JsonValueKind.Object) throw new OpenAiException(400, "The request body must be a JSON object.");
        string model = RequireString(body, "model");
        bool base64 = false;
        if (body.TryGetProperty("encoding_format", out var format) && format.ValueKind != JsonValueKind.Null)
            base64 = format.ValueKind == JsonValueKind.String && format.GetString() is "float" or "base64"
                ? format.GetString() == "base64"
                : throw new OpenAiException(400, "'encoding_format' must be \"float\" or \"base64\".", "encoding_format");
        if (body.TryGetProperty("dimensions", out var dims) && dims.ValueKind != JsonValueKind.Null)
            throw new OpenAiException(400, "'dimensions' is not supported: the embedding width is the model's.", "dimensions", "unsupported_parameter");
        if (!body.TryGetProperty("input", out var input)) throw new OpenAiException(400, "'input' is required.", "input");
        var inputs = new List<object>();
        if (input.ValueKind == JsonValueKind.String) inputs.Add(BodyStrings.String(strings, input));
        else if (input.ValueKind == JsonValueKind.Array && input.GetArrayLength() > 0)
        {
            int i = 0;
            foreach (var item in input.EnumerateArray())
            {
                string path = $"input[{i++}]";
                inputs.Add(item.ValueKind switch
                {
                    JsonValueKind.String => BodyStrings.String(strings, item),
                    JsonValueKind.Object => ParsePart(item, path, server, long.MaxValue, strings) is DataContent image ? image
                        : throw new OpenAiException(400, $"'{path}' must be a string or an image_url part.", path),
                    _ => throw new OpenAiException(400, $"'{path}' must be a string or an image_url part (token arrays are not accepted).", path),
                });
            }
        }
        else throw new OpenAiException(400, "'input' must be a string or a non-empty array.", "input");
        if (inputs.Count > 256) throw new OpenAiException(400, "'input' takes at most 256 items.", "input");
        return (model, inputs, base64);
    }

    /// <summary>OpenAI's finish_reason for a chat finish reason.</summary>
    public static string FinishReason(ChatFinishReason? reason) =>
        reason == ChatFinishReason.Length ? "length" : "stop";

    /// <summary>The usage object.</summary>
    public static JsonObject Usage(UsageDetails? usage) => new()
    {
        ["prompt_tokens"] = usage?.InputTokenCount ?? 0,
        ["completion_tokens"] = usage?.OutputTokenCount ?? 0,
        ["total_tokens"] = (usage?.InputTokenCount ?? 0) + (usage?.OutputTokenCount ?? 0),
    };
}
