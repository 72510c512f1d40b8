using Multimodal.Common;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace Multimodal.Tests.Modules;

/// <summary>A decode step's norms, residual adds and ReLU computed in our own code: each against libtorch's on the same
/// rows, and only on the rows they are meant for.</summary>
public sealed class DecodeRowsTests(ITestOutputHelper output)
{
    [Theory]
    [InlineData(1, 1024, true)]
    [InlineData(8, 80, false)]
    [InlineData(3, 2560, true)]
    [InlineData(1, 1, true)]
    public void A_layer_norm_equals_libtorchs_to_float32_rounding(int rows, int d, bool affine)
    {
        using var scope = NewDisposeScope();
        using var grad = no_grad();
        var generator = new TorchSharp.torch.Generator((ulong)(rows * 977 + d));
        var x = randn(rows, 1, d, generator: generator).mul(3).add(0.5);
        var weight = affine ? randn(d, generator: generator) : null;
        var bias = affine ? randn(d, generator: generator) : null;
        var ours = DecodeRows.LayerNorm(x, weight, bias, 1e-5);
        Assert.NotNull(ours);
        var theirs = nn.functional.layer_norm(x, [d], weight, bias, 1e-5);
        var exact = nn.functional.layer_norm(x.to(ScalarType.Float64), [d], weight?.to(ScalarType.Float64), bias?.to(ScalarType.Float64), 1e-5);
        double ourError = (ours!.to(ScalarType.Float64) - exact).abs().max().item<double>();
        double theirError = (theirs.to(ScalarType.Float64) - exact).abs().max().item<double>();
        double scale = exact.abs().max().item<double>() * Math.Pow(2, -24);
        output.WriteLine($"rows={rows} D={d} affine={affine}: max abs error {ourError:E2} (libtorch {theirError:E2})");
        Assert.True(ourError <= 4 * theirError + 8 * scale, $"our error {ourError:E2} against libtorch's {theirError:E2}");
    }

    [Fact]
    public void Adds_and_relu_change_only_their_target_exactly()
    {
        using var scope = NewDisposeScope();
        using var grad = no_grad();
        var target = randn(2, 1, 300);
        var addend = randn(2, 1, 300);
        var expected = target + addend;
        var before = addend.clone();
        Assert.True(DecodeRows.AddInPlace(target, addend));
        Assert.True(target.eq(expected).all().item<bool>() && addend.eq(before).all().item<bool>());
        var relu = nn.functional.relu(target);
        Assert.True(DecodeRows.ReluInPlace(target));
        Assert.True(target.eq(relu).all().item<bool>());
    }

    [Fact]
    public void It_takes_only_a_few_contiguous_float32_rows_with_autograd_off()
    {
        using var scope = NewDisposeScope();
        using (no_grad())
        {
            Assert.True(DecodeRows.Takes(zeros(8, 1, 16)));
            Assert.False(DecodeRows.Takes(zeros(9, 1, 16)), "more rows than a decode step's");
            Assert.False(DecodeRows.Takes(zeros(2, 1, 16, ScalarType.BFloat16)), "bfloat16");
            Assert.False(DecodeRows.Takes(zeros(16, 2).t()), "strided");
            Assert.Null(DecodeRows.LayerNorm(zeros(1, 1, 16), zeros(15), null, 1e-5));
            Assert.False(DecodeRows.AddInPlace(zeros(1, 1, 16), zeros(1, 1, 15)));
        }
        Assert.False(DecodeRows.Takes(zeros(1, 1, 16).requires_grad_()), "autograd on");
    }
}
