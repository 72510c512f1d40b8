using System.Text;
using Multimodal.Loading;
using Multimodal.Tests.TestSupport;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace Multimodal.Tests.Loading;

/// <summary>Malformed safetensors files give one clear exception naming the file and the tensor, never
/// a native crash or an out-of-range read.</summary>
public sealed class SafetensorsFormatTests(ITestOutputHelper output) : IDisposable
{
    private readonly TempDir _temp = new();

    public void Dispose() => _temp.Dispose();

    private string WriteRaw(string header, int dataBytes, ulong? declaredLength = null)
    {
        var json = Encoding.UTF8.GetBytes(header);
        string path = Path.Combine(_temp.Path, "bad.safetensors");
        using var stream = File.Create(path);
        stream.Write(BitConverter.GetBytes(declaredLength ?? (ulong)json.Length));
        stream.Write(json);
        stream.Write(new byte[dataBytes]);
        return path;
    }

    private CheckpointFormatException Refused(string path, params string[] mustMention)
    {
        var e = Assert.Throws<CheckpointFormatException>(() => SafetensorsFile.Open(path).Dispose());
        output.WriteLine(e.Message);
        Assert.Contains(path, e.Message);
        foreach (var s in mustMention) Assert.Contains(s, e.Message);
        return e;
    }

    [Fact]
    public void A_truncated_file_names_the_tensor_that_runs_past_the_end()
    {
        string source = Path.Combine(FixtureCase.BuiltInRoot, "blip2-opt", "model.safetensors");
        string path = Path.Combine(_temp.Path, "truncated.safetensors");
        var bytes = File.ReadAllBytes(source);
        File.WriteAllBytes(path, bytes[..(bytes.Length - 100)]);
        Refused(path, "language_model.model.decoder.layers.1.final_layer_norm.bias", "truncated");
    }

    [Fact]
    public void A_file_shorter_than_the_length_prefix_is_refused() =>
        Refused(WriteShort(), "shorter than the 8-byte header length");

    private string WriteShort()
    {
        string path = Path.Combine(_temp.Path, "short.safetensors");
        File.WriteAllBytes(path, [1, 2, 3]);
        return path;
    }

    [Fact]
    public void A_header_length_beyond_the_file_is_refused() =>
        Refused(WriteRaw("{}", 0, declaredLength: 5000), "header length 5000 goes beyond the end");

    [Fact]
    public void An_absurd_header_length_is_refused() =>
        Refused(WriteRaw("{}", 0, declaredLength: ulong.MaxValue / 2), "exceeds");

    [Fact]
    public void Overlapping_offsets_are_refused() =>
        Refused(WriteRaw("""{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}""", 12),
            "b: bytes [4, 12) overlap a [0, 8)");

    [Fact]
    public void Bytes_that_belong_to_no_tensor_are_refused()
    {
        Refused(WriteRaw("""{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}""", 8), "a: begins at byte 4", "no tensor covers the bytes before it");
        Refused(WriteRaw("""{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}""", 12),
            "b: begins at byte 8", "a ends at 4: 4 bytes belong to no tensor");
        Refused(WriteRaw("""{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}""", 12), "8 trailing bytes belong to no tensor");
        // Empty tensors take no bytes and fit anywhere in the tiling.
        using var ok = SafetensorsFile.Open(WriteRaw("""{"e":{"dtype":"F32","shape":[0],"data_offsets":[4,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}""", 8));
        Assert.Equal(3, ok.Entries.Count);
    }

    [Fact]
    public void Offsets_of_the_wrong_type_name_the_tensor() =>
        Refused(WriteRaw("""{"w":{"dtype":"F32","shape":[1],"data_offsets":["0",4]}}""", 4), "w: data_offsets [\"0\",4] must be two integers");

    [Fact]
    public void Every_shipped_weight_file_tiles_its_data_section()
    {
        var files = Directory.EnumerateFiles(FixtureCase.BuiltInRoot, "*.safetensors", SearchOption.AllDirectories)
            .Concat(Directory.EnumerateFiles(Path.Combine(Repo.Root, "models"), "*.safetensors", SearchOption.AllDirectories)).ToList();
        Assert.NotEmpty(files);
        foreach (var file in files) SafetensorsFile.Open(file).Dispose();
    }

    [Fact]
    public void Out_of_bounds_offsets_are_refused() =>
        Refused(WriteRaw("""{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}""", 8), "w: data_offsets [0, 16) go beyond the 8-byte data section");

    [Fact]
    public void Offsets_that_disagree_with_shape_and_dtype_are_refused() =>
        Refused(WriteRaw("""{"w":{"dtype":"F16","shape":[4],"data_offsets":[0,16]}}""", 16), "w: shape [4] x F16 needs 8 bytes but data_offsets span 16");

    [Fact]
    public void An_unknown_dtype_is_refused() =>
        Refused(WriteRaw("""{"w":{"dtype":"F31","shape":[1],"data_offsets":[0,4]}}""", 4), "w: unknown dtype \"F31\"");

    [Fact]
    public void A_header_that_is_not_json_is_refused() =>
        Refused(WriteRaw("{\"w\": [1, 2", 0), "not valid UTF-8 JSON");

    [Fact]
    public void Every_problem_of_a_header_is_listed_at_once()
    {
        var e = Refused(WriteRaw("""{"a":{"dtype":"Q8","shape":[1],"data_offsets":[0,1]},"b":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]},"c":{"dtype":"I64","shape":[1],"data_offsets":[0,99]}}""", 8));
        Assert.Equal(4, e.Problems.Count); // c is both too long for the data and inconsistent with its shape
    }

    [Fact]
    public void Every_dtype_of_the_spec_reads_and_round_trips()
    {
        string path = Path.Combine(_temp.Path, "types.safetensors");
        var tensors = new Dictionary<string, Tensor>
        {
            ["f32"] = tensor(new float[] { 1.5f, -2 }),
            ["f16"] = tensor(new float[] { 1.5f, -2 }).to(ScalarType.Float16),
            ["bf16"] = tensor(new float[] { 1.5f, -2 }).to(ScalarType.BFloat16),
            ["f64"] = tensor(new double[] { 1.5, -2 }),
            ["i64"] = tensor(new long[] { 1L << 40, -3 }),
            ["i32"] = tensor(new int[] { 7, -3 }),
            ["i16"] = tensor(new short[] { 7, -3 }),
            ["i8"] = tensor(new sbyte[] { 7, -3 }),
            ["u8"] = tensor(new byte[] { 7, 250 }),
            ["bool"] = tensor(new[] { true, false }),
        };
        SafetensorsWriter.Write(path, tensors);
        using var file = SafetensorsFile.Open(path);
        foreach (var (name, t) in tensors)
        {
            using var read = file.Read(name);
            Assert.Equal(t.dtype, read.dtype);
            Assert.True(t.eq(read).all().item<bool>(), name);
        }
        // Header-level dtypes TorchSharp cannot hold are listed, and reading them says why.
        var raw = WriteRaw("""{"u":{"dtype":"U16","shape":[2],"data_offsets":[0,4]}}""", 4);
        using var unsigned = SafetensorsFile.Open(raw);
        Assert.Equal("U16", unsigned.Entries["u"].DType);
        var e = Assert.Throws<NotSupportedException>(() => unsigned.Read("u"));
        Assert.Contains("U16", e.Message);
    }
}
