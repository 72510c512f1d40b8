using System.IO.Compression;
using System.Text;
using Multimodal.Loading;
using Multimodal.Tests.TestSupport;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace Multimodal.Tests.Loading;

/// <summary>Damaged and hostile <c>.pt</c> files: every one is a <see cref="CheckpointFormatException"/> naming
/// the file (and the global, tensor or structure at fault); nothing is executed, nothing overflows.</summary>
public sealed class TorchCheckpointHardeningTests(ITestOutputHelper output) : IDisposable
{
    private readonly TempDir _temp = new();

    public void Dispose() => _temp.Dispose();

    private static string Fixture => Path.Combine(FixtureCase.BuiltInRoot, "openflamingo", "checkpoint_trainable.pt");

    private string WritePickle(byte[] pickle)
    {
        string path = Path.Combine(_temp.Path, $"p{Guid.NewGuid():N}.pt");
        using var zip = ZipFile.Open(path, ZipArchiveMode.Create);
        using var entry = zip.CreateEntry("archive/data.pkl").Open();
        entry.Write(pickle);
        return path;
    }

    private CheckpointFormatException Refused(string path, params string[] expected)
    {
        var e = Assert.Throws<CheckpointFormatException>(() => TorchCheckpointFile.Open(path).Dispose());
        output.WriteLine(e.Message);
        Assert.Contains(path, e.Message);
        foreach (var s in expected) Assert.Contains(s, e.Message);
        return e;
    }

    private static byte[] Bytes(params object[] parts) =>
        parts.SelectMany(p => p switch { string s => Encoding.ASCII.GetBytes(s), byte b => [b], byte[] a => a, int i => BitConverter.GetBytes(i), _ => [] }).ToArray();

    [Fact]
    public void Refused_globals_are_named_even_behind_opcodes_a_state_dict_never_uses()
    {
        // POP and DUP before the global, as hostile pickles do; protocol 0 INST; STACK_GLOBAL of subprocess.Popen.
        Refused(WritePickle(Bytes((byte)0x80, (byte)2, "N0N2", "cos\nsystem\n(X", 4, "echotR.")), "refused", "os.system");
        Refused(WritePickle(Bytes("(S'x'\nios\nsystem\n.")), "refused", "os.system");
        Refused(WritePickle(Bytes((byte)0x80, (byte)4, (byte)0x8c, (byte)10, "subprocess", (byte)0x94, (byte)0x8c, (byte)5, "Popen", (byte)0x93, ")R.")),
            "refused", "subprocess.Popen");
    }

    [Fact]
    public void Huge_declared_lengths_are_bounded_and_clear()
    {
        Refused(WritePickle(Bytes((byte)0x80, (byte)2, (byte)0x8d, BitConverter.GetBytes(ulong.MaxValue), ".")), "declares", "remain");
        Refused(WritePickle(Bytes((byte)0x80, (byte)2, "X", int.MaxValue, ".")), "declares", "remain");
    }

    [Fact]
    public void Damaged_zip_structures_name_the_file()
    {
        var bytes = File.ReadAllBytes(Fixture);
        // A corrupt local file header: the pickle record's name and extra-field lengths overwritten, so its data
        // would start past the end of the file.
        var local = (byte[])bytes.Clone();
        for (int i = 26; i < 30; i++) local[i] = 0xFF;
        string path = Path.Combine(_temp.Path, "local.pt");
        File.WriteAllBytes(path, local);
        Refused(path);
        // Zip64 markers without their extra field in the central record of the pickle, and then of a storage.
        var central = (byte[])bytes.Clone();
        int cd = FindFirst(central, [0x50, 0x4b, 0x01, 0x02]);
        for (int i = cd + 20; i < cd + 28; i++) central[i] = 0xFF;   // compressed and uncompressed size = 0xFFFFFFFF (zip64 markers)
        path = Path.Combine(_temp.Path, "zip64.pt");
        File.WriteAllBytes(path, central);
        Refused(path);
        var storage = (byte[])bytes.Clone();
        int second = FindFirst(storage, [0x50, 0x4b, 0x01, 0x02], FindFirst(storage, [0x50, 0x4b, 0x01, 0x02]) + 4);
        for (int i = second + 20; i < second + 28; i++) storage[i] = 0xFF;
        path = Path.Combine(_temp.Path, "zip64-storage.pt");
        File.WriteAllBytes(path, storage);
        Refused(path);
    }

    private static int FindFirst(byte[] haystack, byte[] needle, int from = 0)
    {
        for (int i = from; i + needle.Length <= haystack.Length; i++)
            if (haystack.AsSpan(i, needle.Length).SequenceEqual(needle)) return i;
        throw new InvalidOperationException("signature not found");
    }

    [Fact]
    public void A_view_beyond_its_storage_is_refused_before_libtorch_sees_it()
    {
        // A copy of the fixture whose first tensor's size is doubled in the pickle (protocol 2 BININT1/BININT2 sizes).
        using var source = TorchCheckpointFile.Open(Fixture);
        var first = source.Tensors.Values.OrderBy(t => t.Name, StringComparer.Ordinal).First(t => t.Shape.Length == 2 && t.Shape[0] < 250);
        string path = Path.Combine(_temp.Path, "view.pt");
        File.Copy(Fixture, path);
        using (var zip = ZipFile.Open(path, ZipArchiveMode.Update))
        {
            var entry = zip.Entries.Single(e => e.FullName.EndsWith("data.pkl"));
            byte[] pickle;
            using (var s = entry.Open()) { using var m = new MemoryStream(); s.CopyTo(m); pickle = m.ToArray(); }
            // The name, then the storage tuple, then the size tuple: patch the first dimension after the name.
            int at = pickle.AsSpan().IndexOf(Encoding.UTF8.GetBytes(first.Name));
            int size = pickle.AsSpan(at).IndexOf(new byte[] { (byte)'K', (byte)first.Shape[0] }) + at;
            pickle[size + 1] = (byte)(first.Shape[0] * 2);
            entry.Delete();
            using var replaced = zip.CreateEntry(entry.FullName, CompressionLevel.NoCompression).Open();
            replaced.Write(pickle);
        }
        Refused(path, first.Name, "reaches element");
    }

    [Fact]
    public void Streaming_equals_reading_whole_and_tied_storages_load_once_each()
    {
        using var file = TorchCheckpointFile.Open(Path.Combine(FixtureCase.BuiltInRoot, "openflamingo", "checkpoint.pt"));
        foreach (var (name, info) in file.Tensors)
        {
            using var whole = file.Read(name);
            using var streamed = empty(info.Shape);
            file.CopyTo(name, streamed);
            Assert.True(whole.to(ScalarType.Float32).eq(streamed).all().item<bool>(), name);
        }
        output.WriteLine($"{file.Tensors.Count} tensors streamed equal to whole reads");
    }
}
