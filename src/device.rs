//! Device selection: CPU by default, CUDA when built with the `cuda` feature.
use candle_core::Device;

/// Which device to run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, Default)]
pub enum DeviceChoice {
    #[default]
    Cpu,
    Cuda(usize),
}

impl DeviceChoice {
    /// Whether this build can use CUDA at all.
    pub fn cuda_compiled() -> bool {
        cfg!(feature = "cuda")
    }

    pub fn to_device(self) -> candle_core::Result<Device> {
        match self {
            DeviceChoice::Cpu => Ok(Device::Cpu),
            DeviceChoice::Cuda(i) => new_cuda(i),
        }
    }
}

/// The CUDA build loads libcuda, cuBLAS, cuRAND and NVRTC when the first device is created
/// (cudarc's dynamic loading, see scripts/build-cuda.sh), and cudarc panics when one is missing.
/// That panic becomes an error here, so that a machine without a driver gets a message (and the
/// editor keeps its current device) instead of a crash. The silent panic hook is in place only
/// for this call (a panic on another thread meanwhile would go unprinted, not unhandled).
fn new_cuda(ordinal: usize) -> candle_core::Result<Device> {
    let previous_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = std::panic::catch_unwind(|| Device::new_cuda(ordinal));
    std::panic::set_hook(previous_hook);
    match result {
        Ok(device) => device,
        Err(panic) => {
            let reason = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("unknown reason");
            Err(candle_core::Error::Msg(format!(
                "cannot use CUDA device {ordinal}: {reason}"
            )))
        }
    }
}
