using System.Diagnostics;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Multimodal.Blip2;
using Multimodal.Generation;
using Multimodal.Processing;

namespace Multimodal.Server;

/// <summary>The <c>caption-batch</c> verb: captions a folder of images (or a JSONL list of <c>{"id", "image"}</c>)
/// into an append-only JSONL file, one line per image, in batches.</summary>
/// <remarks>
/// Each batch's lines are written with one write and flushed to disk, so a crash loses at most the batch in
/// flight; a line torn by a crash mid-write is cut off by the next <c>--resume</c>, which then skips every id
/// already written. <c>--shard i/n</c> keeps the images whose id hashes (FNV-1a, 64-bit, over the id's UTF-8)
/// to i modulo n, so n workers on n machines cover the set exactly once, with no coordination.
/// </remarks>
public static class CaptionBatch
{
    private const string Usage = "caption-batch --input <folder | file.jsonl> --output results.jsonl [--shard i/n] [--resume] [--model <folder>] [--batch 8] [--max-new-tokens N]";

    private sealed record Item(string Id, string Path);

    /// <summary>Runs the verb; returns the process exit code (2 for bad arguments).</summary>
    public static int Run(string[] args, string defaultModel)
    {
        string? input = null, output = null, model = null;
        int shard = 0, shards = 1, batchSize = 8;
        int? maxNewTokens = null;
        bool resume = false;
        try
        {
            for (int i = 0; i < args.Length; i++)
            {
                string Value() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"{args[i]} needs a value");
                switch (args[i])
                {
                    case "--input": input = Value(); break;
                    case "--output": output = Value(); break;
                    case "--model": model = Value(); break;
                    case "--resume": resume = true; break;
                    case "--batch": batchSize = int.Parse(Value()); break;
                    case "--max-new-tokens": maxNewTokens = int.Parse(Value()); break;
                    case "--shard":
                        var parts = Value().Split('/');
                        if (parts.Length != 2 || !int.TryParse(parts[0], out shard) || !int.TryParse(parts[1], out shards) || shards < 1 || shard < 0 || shard >= shards)
                            throw new ArgumentException($"--shard {string.Join('/', parts)}: expected i/n with 0 <= i < n");
                        break;
                    default: throw new ArgumentException($"unknown argument {args[i]}");
                }
            }
            if (input is null || output is null) throw new ArgumentException("--input and --output are required");
            if (batchSize < 1) throw new ArgumentException("--batch must be at least 1");
        }
        catch (Exception e) when (e is ArgumentException or FormatException)
        {
            Console.Error.WriteLine($"caption-batch: {e.Message}\nusage: {Usage}");
            return 2;
        }

        try
        {
            return Caption(input, output, model ?? defaultModel, shard, shards, batchSize, maxNewTokens, resume);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or InvalidDataException or Loading.CheckpointException
                                      or Common.ConfigException or NotSupportedException or Common.TorchSharpLoadException)
        {
            // The run itself cannot go on (input unreadable, output not writable, model not loadable): one line, no trace.
            Console.Error.WriteLine($"caption-batch: {e.Message}");
            return 1;
        }
    }

    private static int Caption(string input, string output, string model, int shard, int shards, int batchSize, int? maxNewTokens, bool resume)
    {
        var items = Items(input).Where(item => Shard(item.Id, shards) == shard).ToList();
        if (Path.GetDirectoryName(Path.GetFullPath(output)) is { } folder)
        {
            try { Directory.CreateDirectory(folder); }
            catch (IOException e) { throw new IOException($"--output {output}: its folder cannot be created ({e.Message})", e); }
        }
        var done = resume ? Repair(output) : [];
        if (!resume && File.Exists(output) && new FileInfo(output).Length > 0)
        {
            Console.Error.WriteLine($"caption-batch: {output} already has results; pass --resume to continue it.");
            return 2;
        }
        var todo = items.Where(item => !done.Contains(item.Id)).ToList();
        using var file = new FileStream(output, FileMode.Append, FileAccess.Write, FileShare.Read);
        using var captioner = Blip2Captioner.FromPretrained(model);
        var options = new GenerationOptions { MaxNewTokens = maxNewTokens };
        var clock = Stopwatch.StartNew();
        int written = 0, failed = 0;
        bool terminal = !Console.IsErrorRedirected;
        foreach (var batch in todo.Chunk(batchSize))
        {
            var lines = new StringBuilder();
            var decoded = new List<(Item Item, DecodedImage Image)>();
            foreach (var item in batch)
            {
                try { decoded.Add((item, ImageDecoder.Decode(item.Path, captioner.MaxImagePixels))); }
                catch (Exception e) when (e is not OutOfMemoryException)
                {
                    lines.Append(ErrorLine(item, e));
                    failed++;
                }
            }
            foreach (var (item, result) in CaptionAll(captioner, decoded, options))
            {
                if (result.Error is { } error)
                {
                    lines.Append(ErrorLine(item, error));
                    failed++;
                    continue;
                }
                var caption = result.Caption!;
                lines.Append(new JsonObject
                {
                    ["id"] = item.Id,
                    ["caption"] = caption.Text,
                    ["finish_reason"] = OpenAiProtocol.FinishReason(caption.FinishReason.ToChatFinishReason()),
                    ["new_tokens"] = caption.OutputTokens,
                    ["seconds"] = Math.Round(result.Seconds, 4),
                }.ToJsonString()).Append('\n');
            }
            file.Write(Encoding.UTF8.GetBytes(lines.ToString()));
            file.Flush(flushToDisk: true);
            written += batch.Length;
            if (terminal) Console.Error.Write($"\r{Bar(written, todo.Count)} {written}/{todo.Count} images, {written / Math.Max(clock.Elapsed.TotalSeconds, 1e-9):F2} images/s ");
        }
        if (terminal) Console.Error.WriteLine();
        Console.WriteLine($"caption-batch: {written - failed} captioned, {failed} failed, {done.Count} already in {output}, " +
                          $"shard {shard}/{shards} of {items.Count} images, {clock.Elapsed.TotalSeconds:F1} s ({(written - failed) / Math.Max(clock.Elapsed.TotalSeconds, 1e-9):F2} images/s)");
        return 0;
    }

    private static string ErrorLine(Item item, Exception e) =>
        new JsonObject { ["id"] = item.Id, ["error"] = e.Message }.ToJsonString() + "\n";

    private sealed record Outcome(TextResult? Caption, Exception? Error, double Seconds);

    // A batch that fails is captioned again one image at a time, so only the image at fault gets an error line.
    private static IEnumerable<(Item, Outcome)> CaptionAll(Blip2Captioner captioner, List<(Item Item, DecodedImage Image)> decoded, GenerationOptions options)
    {
        if (decoded.Count == 0) return [];
        var clock = Stopwatch.StartNew();
        try
        {
            var results = captioner.CaptionAsync(decoded.Select(d => d.Image).ToList(), decoded.Select(_ => "").ToList(), options).GetAwaiter().GetResult();
            double seconds = clock.Elapsed.TotalSeconds / decoded.Count;
            return decoded.Select((d, i) => (d.Item, new Outcome(results[i], null, seconds))).ToList();
        }
        catch (Exception) when (decoded.Count > 1)
        {
            return decoded.SelectMany(d => CaptionAll(captioner, [d], options)).ToList();
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            return [(decoded[0].Item, new Outcome(null, e, clock.Elapsed.TotalSeconds))];
        }
    }

    private static string Bar(int done, int total)
    {
        int filled = total == 0 ? 30 : 30 * done / total;
        return "[" + new string('#', filled) + new string(' ', 30 - filled) + "]";
    }

    /// <summary>The shard an id belongs to: FNV-1a 64 over its UTF-8 bytes, modulo <paramref name="shards"/>.</summary>
    public static int Shard(string id, int shards)
    {
        ulong hash = 14695981039346656037UL;
        foreach (byte b in Encoding.UTF8.GetBytes(id)) hash = (hash ^ b) * 1099511628211UL;
        return (int)(hash % (ulong)shards);
    }

    private static readonly string[] Extensions = [".png", ".jpg", ".jpeg", ".webp"];

    // A folder: its image files (recursively), id = path relative to the folder with '/' separators, sorted.
    // A .jsonl file: one {"id": ..., "image": path} per line, paths relative to the file's folder.
    private static IEnumerable<Item> Items(string input)
    {
        if (Directory.Exists(input))
            return Directory.EnumerateFiles(input, "*", SearchOption.AllDirectories)
                .Where(p => Extensions.Contains(Path.GetExtension(p).ToLowerInvariant()))
                .Select(p => new Item(Path.GetRelativePath(input, p).Replace('\\', '/'), p))
                .OrderBy(i => i.Id, StringComparer.Ordinal).ToList();
        if (!File.Exists(input)) throw new FileNotFoundException($"--input {input}: no such folder or file.");
        string baseDir = Path.GetDirectoryName(Path.GetFullPath(input))!;
        var items = new List<Item>();
        int lineNumber = 0;
        foreach (var line in File.ReadLines(input))
        {
            lineNumber++;
            if (line.Trim().Length == 0) continue;
            JsonNode? node;
            try { node = JsonNode.Parse(line); }
            catch (JsonException e) { throw new InvalidDataException($"{input}:{lineNumber}: not JSON ({e.Message})."); }
            string? id = (string?)node?["id"], image = (string?)node?["image"];
            if (id is null || image is null) throw new InvalidDataException($"{input}:{lineNumber}: expected {{\"id\": ..., \"image\": ...}}.");
            items.Add(new Item(id, Path.Combine(baseDir, image)));
        }
        return items;
    }

    // The ids already written; a last line torn by a crash (no newline, or not JSON) is cut off first.
    private static HashSet<string> Repair(string output)
    {
        var ids = new HashSet<string>(StringComparer.Ordinal);
        if (!File.Exists(output)) return ids;
        byte[] bytes = File.ReadAllBytes(output);
        int end = Array.LastIndexOf(bytes, (byte)'\n') + 1;               // everything after the last newline is torn
        if (end < bytes.Length)
            using (var f = new FileStream(output, FileMode.Open, FileAccess.Write)) f.SetLength(end);
        foreach (var line in Encoding.UTF8.GetString(bytes, 0, end).Split('\n', StringSplitOptions.RemoveEmptyEntries))
            if ((string?)JsonNode.Parse(line)?["id"] is string id) ids.Add(id);
        return ids;
    }
}
