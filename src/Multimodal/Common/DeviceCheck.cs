
namespace Multimodal.Common;

/// <summary>Parses and validates the devices and dtypes models run in.</summary>
public static class DeviceCheck
{
    private const string NoCuda =
        "CUDA was requested but no CUDA device is usable: reference a TorchSharp CUDA backend package " +
        "(TorchSharp-cuda-linux or TorchSharp-cuda-windows) instead of the CPU one, and check the driver.";

    /// <summary>Parses "cpu", "cuda" or "cuda:N".</summary>
    /// <exception cref="NotSupportedException">CUDA is asked for but its backend or device is absent.</exception>
    /// <exception cref="ArgumentException">the name is not a device.</exception>
    /// <exception cref="TorchSharpLoadException">TorchSharp's native library cannot be loaded.</exception>
    public static Device Parse(string name)
    {
        TorchRuntime.EnsureLoaded();
        if (name == "cpu") return CPU;
        if (name != "cuda" && !name.StartsWith("cuda:", StringComparison.Ordinal))
            throw new ArgumentException($"device '{name}': expected cpu, cuda or cuda:N.", nameof(name));
        try
        {
            // TorchSharp initialises the CUDA backend on first use and throws when it is not there.
            if (!cuda.is_available()) throw new NotSupportedException(NoCuda);
            return device(name);
        }
        catch (InvalidOperationException e)
        {
            throw new NotSupportedException(NoCuda, e);
        }
    }

    /// <summary>The device to build on: CPU when null; CUDA only when usable.</summary>
    internal static Device Resolve(Device? device)
    {
        TorchRuntime.EnsureLoaded();
        device ??= CPU;
        if (device.type == DeviceType.CUDA)
        {
            bool usable;
            try { usable = cuda.is_available(); }
            catch (InvalidOperationException) { usable = false; }
            if (!usable) throw new NotSupportedException(NoCuda);
        }
        if (device.type is not (DeviceType.CPU or DeviceType.CUDA or DeviceType.META))
            throw new NotSupportedException($"Device {device} is not supported; use cpu or cuda.");
        return device;
    }

    /// <summary>The dtype to build in: Float32 when null; Float32, Float16 or BFloat16.</summary>
    internal static ScalarType Resolve(ScalarType? dtype)
    {
        var t = dtype ?? ScalarType.Float32;
        if (t is not (ScalarType.Float32 or ScalarType.Float16 or ScalarType.BFloat16))
            throw new NotSupportedException($"dtype {t} is not supported; use Float32, Float16 or BFloat16.");
        return t;
    }
}
