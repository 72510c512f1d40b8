using System.IO.Compression;
using Multimodal.Loading;
using Multimodal.Tests.TestSupport;
using Xunit.Abstractions;

namespace Multimodal.Tests.Loading;

/// <summary>Archives <c>torch.load</c> reads that <c>torch.save</c> did not write: the fixture's checkpoint rewritten
/// with its records in another order (data.pkl last), at offsets torch's 64-byte alignment never gives, compressed, and
/// by a streaming writer (sizes in data descriptors after each record, zeros in the local headers), and in ZIP64 form.
/// Each must give the same tensors, bit for bit.</summary>
public sealed class TorchArchiveLayoutTests(ITestOutputHelper output) : IDisposable
{
    private readonly TempDir _temp = new();

    public void Dispose() => _temp.Dispose();

    private static string Fixture => Path.Combine(FixtureCase.BuiltInRoot, "openflamingo", "checkpoint_trainable.pt");

    public static TheoryData<string> Layouts() => ["reversed", "unaligned", "deflated", "streamed", "zip64"];

    [Theory]
    [MemberData(nameof(Layouts))]
    public void A_rewritten_archive_gives_the_same_tensors(string layout)
    {
        var records = new List<(string Name, byte[] Bytes)>();
        using (var original = ZipFile.OpenRead(Fixture))
            foreach (var entry in original.Entries)
            {
                using var stream = entry.Open();
                using var copy = new MemoryStream();
                stream.CopyTo(copy);
                records.Add((entry.FullName, copy.ToArray()));
            }
        if (layout == "reversed") records.Reverse();
        string path = Path.Combine(_temp.Path, layout + ".pt");
        if (layout == "zip64") File.WriteAllBytes(path, Zip64(records));
        else
        using (var file = File.Create(path))
        {
            // A one-byte comment-like prefix record shifts every later record off any alignment.
            Stream target = layout == "streamed" ? new ForwardOnly(file) : file;
            using var zip = new ZipArchive(target, ZipArchiveMode.Create, leaveOpen: true);
            if (layout == "unaligned")
                using (var pad = zip.CreateEntry("archive/.pad", CompressionLevel.NoCompression).Open()) pad.WriteByte(0);
            foreach (var (name, bytes) in records)
            {
                using var stream = zip.CreateEntry(name, layout == "deflated" ? CompressionLevel.Optimal : CompressionLevel.NoCompression).Open();
                stream.Write(bytes);
            }
        }

        using var expected = TorchCheckpointFile.Open(Fixture);
        using var rewritten = TorchCheckpointFile.Open(path);
        Assert.Equal(expected.Tensors.Keys.Order(), rewritten.Tensors.Keys.Order());
        foreach (var name in expected.Tensors.Keys)
        {
            using var a = expected.Read(name);
            using var b = rewritten.Read(name);
            Assert.True(a.shape.SequenceEqual(b.shape) && a.eq(b).all().item<bool>(), $"{name} differs in the {layout} archive");
            using var into = TorchSharp.torch.zeros_like(a);
            rewritten.CopyTo(name, into);
            Assert.True(a.eq(into).all().item<bool>(), $"{name} copied from the {layout} archive differs");
        }
        output.WriteLine($"{layout}: {expected.Tensors.Count} tensors equal ({new FileInfo(path).Length} bytes, was {new FileInfo(Fixture).Length})");
    }

    /// <summary>As in a Hugging Face cache, where every file is a link to a blob: the size checks must be the blob's,
    /// not the link's (a link's own length is that of its target's name). Images read through a link likewise.</summary>
    [Fact]
    public void A_checkpoint_and_an_image_reached_through_links_read_whole()
    {
        string blobs = Path.Combine(_temp.Path, "blobs"), snapshot = Path.Combine(_temp.Path, "snapshots", "abc");
        Directory.CreateDirectory(blobs);
        Directory.CreateDirectory(snapshot);
        File.Copy(Fixture, Path.Combine(blobs, "0123"));
        File.CreateSymbolicLink(Path.Combine(snapshot, "checkpoint.pt"), "../../blobs/0123");
        using var expected = TorchCheckpointFile.Open(Fixture);
        using var linked = TorchCheckpointFile.Open(Path.Combine(snapshot, "checkpoint.pt"));
        foreach (var name in expected.Tensors.Keys)
        {
            using var a = expected.Read(name);
            using var b = linked.Read(name);
            Assert.True(a.eq(b).all().item<bool>(), $"{name} differs through the link");
        }

        File.CreateSymbolicLink(Path.Combine(snapshot, "scene1.png"), Repo.Scene1);
        Assert.Equal(File.ReadAllBytes(Repo.Scene1), Multimodal.Processing.ImageDecoder.ReadImageFile(Path.Combine(snapshot, "scene1.png"), 1 << 20));
        File.CreateSymbolicLink(Path.Combine(snapshot, "loop.png"), "loop.png");
        output.WriteLine(Assert.ThrowsAny<Exception>(() => Multimodal.Processing.ImageDecoder.ReadImageFile(Path.Combine(snapshot, "loop.png"), 1 << 20)).Message);
    }

    /// <summary>Stored records in ZIP64 form throughout, as writers that do not know sizes in advance make them: every
    /// size and offset 0xFFFFFFFF in the 32-bit fields, the real ones in ZIP64 extra fields, a ZIP64 end record and
    /// locator before the classic end record.</summary>
    private static byte[] Zip64(List<(string Name, byte[] Bytes)> records)
    {
        using var zip = new MemoryStream();
        using var w = new BinaryWriter(zip);
        var offsets = new List<long>();
        foreach (var (name, bytes) in records)
        {
            offsets.Add(zip.Position);
            var nameBytes = System.Text.Encoding.UTF8.GetBytes(name);
            w.Write(0x04034b50u); w.Write((ushort)45); w.Write((ushort)0); w.Write((ushort)0); w.Write(0u);
            w.Write(Crc32(bytes)); w.Write(uint.MaxValue); w.Write(uint.MaxValue);
            w.Write((ushort)nameBytes.Length); w.Write((ushort)20); w.Write(nameBytes);
            w.Write((ushort)1); w.Write((ushort)16); w.Write((long)bytes.Length); w.Write((long)bytes.Length);
            w.Write(bytes);
        }
        long directory = zip.Position;
        for (int i = 0; i < records.Count; i++)
        {
            var (name, bytes) = records[i];
            var nameBytes = System.Text.Encoding.UTF8.GetBytes(name);
            w.Write(0x02014b50u); w.Write((ushort)45); w.Write((ushort)45); w.Write((ushort)0); w.Write((ushort)0); w.Write(0u);
            w.Write(Crc32(bytes)); w.Write(uint.MaxValue); w.Write(uint.MaxValue);
            w.Write((ushort)nameBytes.Length); w.Write((ushort)28); w.Write((ushort)0); w.Write((ushort)0); w.Write((ushort)0); w.Write(0u);
            w.Write(uint.MaxValue); w.Write(nameBytes);
            w.Write((ushort)1); w.Write((ushort)24); w.Write((long)bytes.Length); w.Write((long)bytes.Length); w.Write(offsets[i]);
        }
        long directorySize = zip.Position - directory, end64 = zip.Position;
        w.Write(0x06064b50u); w.Write(44L); w.Write((ushort)45); w.Write((ushort)45); w.Write(0u); w.Write(0u);
        w.Write((long)records.Count); w.Write((long)records.Count); w.Write(directorySize); w.Write(directory);
        w.Write(0x07064b50u); w.Write(0u); w.Write(end64); w.Write(1u);
        w.Write(0x06054b50u); w.Write((ushort)0); w.Write((ushort)0); w.Write(ushort.MaxValue); w.Write(ushort.MaxValue);
        w.Write(uint.MaxValue); w.Write(uint.MaxValue); w.Write((ushort)0);
        w.Flush();
        return zip.ToArray();
    }

    private static uint Crc32(byte[] bytes)
    {
        uint crc = uint.MaxValue;
        foreach (byte b in bytes)
        {
            crc ^= b;
            for (int k = 0; k < 8; k++) crc = (crc & 1) != 0 ? (crc >> 1) ^ 0xEDB88320u : crc >> 1;
        }
        return ~crc;
    }

    /// <summary>A stream that cannot seek, as a streaming zip writer sees its output.</summary>
    private sealed class ForwardOnly(Stream inner) : Stream
    {
        public override bool CanRead => false;
        public override bool CanSeek => false;
        public override bool CanWrite => true;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => inner.Position; set => throw new NotSupportedException(); }
        public override void Flush() => inner.Flush();
        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => inner.Write(buffer, offset, count);
    }
}
