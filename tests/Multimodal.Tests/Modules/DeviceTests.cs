using Multimodal.Blip2;
using Multimodal.Common;
using Multimodal.Tests.TestSupport;
using static TorchSharp.torch;

namespace Multimodal.Tests.Modules;

/// <summary>Device and dtype options fail clearly when they cannot be honoured.</summary>
public sealed class DeviceTests
{
    private static bool CudaUsable()
    {
        try { return cuda.is_available(); }
        catch (InvalidOperationException) { return false; }
    }

    [SkippableFact]
    public void Asking_for_cuda_without_the_cuda_backend_says_which_package_is_missing()
    {
        Skip.If(CudaUsable(), "a CUDA device is present");
        var e = Assert.Throws<NotSupportedException>(() => DeviceCheck.Parse("cuda"));
        Assert.Contains("TorchSharp-cuda-linux", e.Message);
        var config = Blip2Config.Load(Path.Combine(FixtureCase.BuiltInRoot, "blip2-opt", "config.json"));
        Assert.Throws<NotSupportedException>(() => new Blip2ForConditionalGeneration(config, new Device(TorchSharp.DeviceType.CUDA)));
    }

    [Fact]
    public void Unsupported_dtypes_and_device_names_are_refused()
    {
        var config = Blip2Config.Load(Path.Combine(FixtureCase.BuiltInRoot, "blip2-opt", "config.json"));
        var e = Assert.Throws<NotSupportedException>(() => new Blip2ForConditionalGeneration(config, dtype: ScalarType.Int32));
        Assert.Contains("Int32", e.Message);
        Assert.Throws<ArgumentException>(() => DeviceCheck.Parse("tpu"));
    }
}
