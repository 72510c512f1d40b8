using Multimodal.Generation;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace Multimodal.Tests.Generation;

/// <summary>The KV cache's storage: what a layer returns is every position written to it, in order, across the storage
/// growing and the batch being reordered, and the storage grows only as its rule says.</summary>
public sealed class KvCacheTests(ITestOutputHelper output)
{
    [Fact]
    public void A_layer_returns_every_position_written_in_order_as_its_storage_grows()
    {
        using var scope = NewDisposeScope();
        using var cache = new KvCache(2);
        var written = new List<Tensor>();
        var first = randn(2, 3, 40, 8);
        written.Add(first);
        cache.Update(0, first, first.neg());
        for (int step = 0; step < 100; step++)        // past the first capacity (64) and the doubled one (128)
        {
            var fresh = randn(2, 3, 1, 8);
            written.Add(fresh);
            var (keys, values) = cache.Update(0, fresh, fresh.neg());
            var expected = cat(written, 2);
            Assert.Equal(expected.shape, keys.shape);
            Assert.True(keys.eq(expected).all().item<bool>() && values.eq(expected.neg()).all().item<bool>(), $"step {step}: the cached positions differ from those written");
        }
        Assert.Equal(140, cache.SequenceLength);
        output.WriteLine("140 positions written one at a time after a prefill of 40: every view equals the concatenation");
    }

    [Theory]
    [InlineData(1, 64)]
    [InlineData(64, 64)]
    [InlineData(65, 128)]
    [InlineData(200, 256)]
    public void The_first_storage_holds_the_prefill_rounded_up_to_the_reserve(int prefill, long capacity)
    {
        using var scope = NewDisposeScope();
        using var cache = new KvCache(1);
        var (keys, _) = cache.Update(0, zeros(1, 1, prefill, 4), zeros(1, 1, prefill, 4));
        // The view's batch stride is the storage's positions times d.
        Assert.Equal(capacity * 4, keys.stride(0));
    }

    [Fact]
    public void Reordering_selects_rows_and_keeps_appending_after_them()
    {
        using var scope = NewDisposeScope();
        using var cache = new KvCache(1);
        var prefill = randn(3, 2, 5, 4);
        cache.Update(0, prefill, prefill);
        cache.Reorder(tensor(new long[] { 2, 2, 0 }));
        var fresh = randn(3, 2, 1, 4);
        var (keys, values) = cache.Update(0, fresh, fresh);
        var expected = cat([prefill.index_select(0, tensor(new long[] { 2, 2, 0 })), fresh], 2);
        Assert.True(keys.eq(expected).all().item<bool>() && values.eq(expected).all().item<bool>());
        Assert.Equal(6, cache.SequenceLength);
    }

    [Theory]
    [InlineData(true)]      // contiguous rows: copied in place
    [InlineData(false)]     // strided rows: through a view
    public void Rows_appended_as_a_projection_gives_them_equal_the_same_keys_split_into_heads(bool contiguous)
    {
        using var scope = NewDisposeScope();
        using var byRows = new KvCache(1);
        using var bySplit = new KvCache(1);
        const int b = 2, heads = 3, d = 5;
        var prefill = randn(b, heads, 70, d);
        byRows.Update(0, prefill, prefill.neg());
        bySplit.Update(0, prefill, prefill.neg());
        for (int step = 0; step < 60; step++)                 // across the growth from 128 positions
        {
            var keys = contiguous ? randn(b, 1, heads * d) : randn(b, heads * d, 1).transpose(1, 2);
            var values = keys.neg();
            var (k, v, length) = byRows.AppendRows(0, keys, values, heads);
            var split = keys.view(b, 1, heads, d).transpose(1, 2);
            var (expectedK, expectedV) = bySplit.Update(0, split, split.neg());
            Assert.Equal(71 + step, length);
            Assert.Equal(length, byRows.LengthOf(0));
            Assert.True(k.narrow(2, 0, length).eq(expectedK).all().item<bool>() && v.narrow(2, 0, length).eq(expectedV).all().item<bool>(),
                $"step {step}: the rows differ from the split heads");
        }
        Assert.Throws<ArgumentException>(() => byRows.AppendRows(0, randn(b, 2, heads * d), randn(b, 2, heads * d), heads));
        Assert.Throws<ArgumentException>(() => byRows.AppendRows(0, randn(b + 1, 1, heads * d), randn(b + 1, 1, heads * d), heads));
        Assert.Throws<ArgumentException>(() => byRows.AppendRows(0, randn(b, 1, heads * d), randn(b, 1, heads * d), heads * d));
        Assert.Equal(130, byRows.LengthOf(0));        // nothing half-written by the refused rows
    }

    [Fact]
    public void A_disposed_cache_refuses_updates()
    {
        var cache = new KvCache(1);
        cache.Dispose();
        Assert.Throws<ObjectDisposedException>(() => cache.Update(0, zeros(1, 1, 1, 4), zeros(1, 1, 1, 4)));
    }
}
