using Multimodal.Blip2;
using Multimodal.Common;
using Multimodal.Generation;
using Multimodal.Processing;
using Xunit.Abstractions;

namespace Multimodal.Tests.TestSupport;

/// <summary>What the CPU kernels' tests share: skipping with the reason a kernel is off, and the model-level check that a
/// caption decodes the same ids through a kernel as without it, with a call counter proving the kernel ran.</summary>
internal static class KernelChecks
{
    /// <summary>Skips unless <paramref name="available"/>, saying whether the machine lacks the kernel or it is switched off.</summary>
    public static void SkipUnless(bool available) =>
        Skip.IfNot(available, CpuKernelOptions.Supported
            ? $"the kernel is switched off ({CpuKernelOptions.Variable}=0 or CpuKernelOptions.Current)"
            : "this machine cannot run the kernel (no AVX-512, or libtorch's libgomp not found)");

    /// <summary>The trained model captions scene 1 (prompt "a big", 20 new tokens) with the kernel and again under
    /// <paramref name="without"/>: the ids must be equal, the kernel (<paramref name="calls"/>: its counter on this thread)
    /// must have run in the first and not in the second.</summary>
    public static void SameIdsWithAndWithout(ITestOutputHelper output, string what, Func<long> calls, Func<IDisposable> without)
    {
        using var captioner = Blip2Captioner.FromPretrained(Repo.ShapesModel);
        using var inputs = captioner.Processor.Process([ImageDecoder.Decode(Repo.Scene1)], ["a big"]);
        long[] Ids()
        {
            using var result = captioner.Model.Generate(inputs.PixelValues, inputs.InputIds, inputs.AttentionMask, new GenerationOptions { MaxNewTokens = 20 });
            return result.Sequences[0];
        }
        long before = calls();
        var withKernel = Ids();
        long used = calls() - before;
        long[] withLibtorch;
        using (without()) withLibtorch = Ids();
        Assert.Equal(before + used, calls());
        output.WriteLine($"\"{captioner.Processor.Tokenizer.Decode(withKernel)}\": {used} {what} in the kernel");
        Assert.True(used > 0, $"the decode never reached the kernel ({what})");
        Assert.Equal(withLibtorch, withKernel);
    }
}
