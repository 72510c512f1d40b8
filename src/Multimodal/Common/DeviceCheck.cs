using TorchSharp;
using static TorchSharp.torch;

namespace Multimodal.Common;

/// <summary>Validates the device and dtype a model is asked to run in.</summary>
internal static class DeviceCheck
{
    public static Device Resolve(Device? device)
    {
        device ??= CPU;
        if (device.type == DeviceType.CUDA && !cuda.is_available())
            throw new NotSupportedException(
                "CUDA was requested but no CUDA device is usable: reference a TorchSharp CUDA backend package " +
                "(TorchSharp-cuda-linux or TorchSharp-cuda-windows) instead of the CPU one, and check the driver.");
        if (device.type is not (DeviceType.CPU or DeviceType.CUDA or DeviceType.META))
            throw new NotSupportedException($"Device {device} is not supported; use cpu or cuda.");
        return device;
    }

    public static ScalarType Resolve(ScalarType? dtype)
    {
        var t = dtype ?? ScalarType.Float32;
        if (t is not (ScalarType.Float32 or ScalarType.Float16 or ScalarType.BFloat16))
            throw new NotSupportedException($"dtype {t} is not supported; use Float32, Float16 or BFloat16.");
        return t;
    }
}
