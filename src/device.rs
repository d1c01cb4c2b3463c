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
            DeviceChoice::Cuda(i) => Device::new_cuda(i),
        }
    }
}
