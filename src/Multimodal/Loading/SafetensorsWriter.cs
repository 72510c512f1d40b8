using System.Text;
using System.Text.Json;

namespace Multimodal.Loading;

/// <summary>Writes tensors in the safetensors format: header padded with spaces so the data starts
/// 8-byte aligned, tensors stored contiguously in the order given.</summary>
/// <remarks>The file is written to a temporary name and renamed into place, so a failure never
/// leaves a half-written checkpoint behind.</remarks>
public static class SafetensorsWriter
{
    /// <summary>Writes <paramref name="tensors"/> (any device; copied to CPU as needed) to <paramref name="path"/>.</summary>
    public static void Write(string path, IEnumerable<KeyValuePair<string, Tensor>> tensors,
        IReadOnlyDictionary<string, string>? metadata = null)
    {
        var list = tensors.ToList();
        var header = new Dictionary<string, object>();
        if (metadata is not null) header["__metadata__"] = metadata;
        long offset = 0;
        foreach (var (name, tensor) in list)
        {
            long bytes = tensor.numel() * tensor.ElementSize;
            header[name] = new Dictionary<string, object>
            {
                ["dtype"] = SafetensorsDType.FromTorch(tensor.dtype),
                ["shape"] = tensor.shape,
                ["data_offsets"] = new[] { offset, offset + bytes },
            };
            offset += bytes;
        }
        var json = Encoding.UTF8.GetBytes(JsonSerializer.Serialize(header));
        int padding = (8 - (8 + json.Length) % 8) % 8;
        var padded = new byte[json.Length + padding];
        json.CopyTo(padded, 0);
        padded.AsSpan(json.Length).Fill((byte)' ');

        string temp = path + ".partial";
        try
        {
            using (var stream = new FileStream(temp, FileMode.Create, FileAccess.Write))
            {
                stream.Write(BitConverter.GetBytes((ulong)padded.Length));
                stream.Write(padded);
                foreach (var (_, tensor) in list)
                {
                    using var scope = NewDisposeScope();
                    var flat = tensor.detach().cpu().contiguous().view(-1);
                    long chunk = (1L << 30) / Math.Max(1, flat.ElementSize);
                    for (long start = 0; start < flat.numel(); start += chunk)
                        stream.Write(flat.narrow(0, start, Math.Min(chunk, flat.numel() - start)).bytes);
                }
            }
            File.Move(temp, path, overwrite: true);
        }
        finally
        {
            if (File.Exists(temp)) File.Delete(temp);
        }
    }
}
