using System.IO.Compression;
using System.Text;
using static TorchSharp.torch;

namespace Multimodal.Tests.TestSupport;

/// <summary>Writes a state dict as <c>torch.save</c> does (zip format, protocol-2 pickle of an OrderedDict whose values
/// are <c>torch._utils._rebuild_tensor_v2</c> over persistent storage ids, one stored record per storage under
/// <c>archive/data/</c>), so the suite can make <c>pytorch_model.bin</c> twins of its fixtures.</summary>
public static class TorchZipWriter
{
    private static readonly Dictionary<ScalarType, string> StorageOf = new()
    {
        [ScalarType.Float32] = "FloatStorage", [ScalarType.Float16] = "HalfStorage", [ScalarType.BFloat16] = "BFloat16Storage",
        [ScalarType.Float64] = "DoubleStorage", [ScalarType.Int64] = "LongStorage", [ScalarType.Int32] = "IntStorage",
        [ScalarType.Int8] = "CharStorage", [ScalarType.Byte] = "ByteStorage", [ScalarType.Bool] = "BoolStorage",
    };

    /// <summary>Writes <paramref name="tensors"/> (each its own storage) to <paramref name="path"/>.</summary>
    public static void Write(string path, IReadOnlyList<KeyValuePair<string, Tensor>> tensors)
    {
        var pickle = new List<byte> { 0x80, 2 };
        void Ascii(string s) => pickle.AddRange(Encoding.ASCII.GetBytes(s));
        void Text(string s) { pickle.Add((byte)'X'); pickle.AddRange(BitConverter.GetBytes(Encoding.UTF8.GetByteCount(s))); pickle.AddRange(Encoding.UTF8.GetBytes(s)); }
        void Int(long v) { pickle.Add((byte)'J'); pickle.AddRange(BitConverter.GetBytes(checked((int)v))); }
        void Tuple(long[] values) { Ascii("("); foreach (var v in values) Int(v); Ascii("t"); }
        Ascii("ccollections\nOrderedDict\n)R");
        for (int i = 0; i < tensors.Count; i++)
        {
            var (name, tensor) = (tensors[i].Key, tensors[i].Value);
            long[] shape = tensor.shape, stride = new long[shape.Length];
            for (int d = shape.Length - 1, s = 1; d >= 0; s *= (int)shape[d], d--) stride[d] = s;
            Text(name);
            Ascii("ctorch._utils\n_rebuild_tensor_v2\n(");
            Ascii("(");
            Text("storage");
            Ascii($"ctorch\n{StorageOf[tensor.dtype]}\n");
            Text(i.ToString());
            Text("cpu");
            Int(tensor.numel());
            Ascii("tQ");
            Int(0);
            Tuple(shape);
            Tuple(stride);
            pickle.Add(0x89);                                                    // requires_grad False
            Ascii("ccollections\nOrderedDict\n)R");                               // backward hooks
            Ascii("tRs");
        }
        Ascii(".");
        using var zip = ZipFile.Open(path, ZipArchiveMode.Create);
        using (var entry = zip.CreateEntry("archive/data.pkl", CompressionLevel.NoCompression).Open())
            entry.Write(pickle.ToArray());
        for (int i = 0; i < tensors.Count; i++)
        {
            using var contiguous = tensors[i].Value.contiguous();
            using var entry = zip.CreateEntry($"archive/data/{i}", CompressionLevel.NoCompression).Open();
            entry.Write(contiguous.bytes);
        }
        using (var version = zip.CreateEntry("archive/version", CompressionLevel.NoCompression).Open())
            version.Write("3\n"u8);
    }
}
