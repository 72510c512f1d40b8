using System.IO.Compression;
using Multimodal.Loading;
using Multimodal.Tests.TestSupport;
using Xunit.Abstractions;

namespace Multimodal.Tests.Loading;

/// <summary>Archives <c>torch.load</c> reads that <c>torch.save</c> did not write: the fixture's checkpoint rewritten
/// with its records in another order (data.pkl last), at offsets torch's 64-byte alignment never gives, compressed, and
/// by a streaming writer (sizes in data descriptors after each record, zeros in the local headers). Each must give the
/// same tensors, bit for bit.</summary>
public sealed class TorchArchiveLayoutTests(ITestOutputHelper output) : IDisposable
{
    private readonly TempDir _temp = new();

    public void Dispose() => _temp.Dispose();

    private static string Fixture => Path.Combine(FixtureCase.BuiltInRoot, "openflamingo", "checkpoint_trainable.pt");

    public static TheoryData<string> Layouts() => ["reversed", "unaligned", "deflated", "streamed"];

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
