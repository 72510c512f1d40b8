using System.Security.Cryptography;
using System.Text;

namespace Multimodal.Server;

/// <summary>The server's API keys (<see cref="ServerOptions.ApiKeys"/>, <c>MULTIMODAL_API_KEY</c>,
/// <see cref="ServerOptions.ApiKeyFile"/>), checked as OpenAI's API and vLLM's <c>--api-key</c> check them: a bearer token
/// on every <c>/v1</c> request. Only SHA-256 digests are kept, and they are compared in constant time, so neither a key's
/// bytes nor its length leak through timing; keys never reach logs or metrics.</summary>
public sealed class ApiKeys
{
    private readonly byte[][] _digests;

    /// <summary>Collects the keys from the options, the environment variable and the key file.</summary>
    /// <exception cref="InvalidOperationException">the key file is named but cannot be read, or a key is blank.</exception>
    public ApiKeys(ServerOptions options, string? environmentKey)
    {
        var keys = new List<string>(options.ApiKeys);
        if (!string.IsNullOrEmpty(environmentKey)) keys.Add(environmentKey);
        if (options.ApiKeyFile is { Length: > 0 } file)
        {
            if (!File.Exists(file)) throw new InvalidOperationException($"Multimodal:ApiKeyFile '{file}' does not exist.");
            keys.AddRange(File.ReadAllLines(file).Select(l => l.Trim()).Where(l => l.Length > 0 && !l.StartsWith('#')));
        }
        if (keys.Any(string.IsNullOrWhiteSpace)) throw new InvalidOperationException("Multimodal:ApiKeys holds a blank key.");
        _digests = keys.Select(k => SHA256.HashData(Encoding.UTF8.GetBytes(k.Trim()))).ToArray();
    }

    /// <summary>Whether any key is set (and so every <c>/v1</c> request needs one).</summary>
    public bool Required => _digests.Length > 0;

    /// <summary>How many keys are set.</summary>
    public int Count => _digests.Length;

    /// <summary>Whether an <c>Authorization</c> header carries one of the keys.</summary>
    public bool Accepts(string? authorization)
    {
        if (!Required) return true;
        const string scheme = "Bearer ";
        if (authorization is null || !authorization.StartsWith(scheme, StringComparison.OrdinalIgnoreCase)) return false;
        var digest = SHA256.HashData(Encoding.UTF8.GetBytes(authorization[scheme.Length..].Trim()));
        bool found = false;
        foreach (var key in _digests) found |= CryptographicOperations.FixedTimeEquals(digest, key);   // no early exit
        return found;
    }
}
