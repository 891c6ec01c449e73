//! The one place a job's backend is chosen.
//!
//! Every job (SFT, ReGRPO, evaluation with its agent loop, the demo) takes a [`DeviceKind`]
//! and runs its generic body through [`on_device!`](crate::on_device), which binds the
//! backend type: burn's Flex on the CPU, burn's CUDA backend with the `cuda` feature. No other
//! module names a concrete backend (a test in this module reads the sources to keep it so).

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// The CPU backend of every job: burn's Flex (gemm matmuls, copy-on-write tensors), 1.2× the
/// SFT tokens/s of NdArray on the demo's shapes (`examples/sft_bench.rs --backend flex|ndarray`).
pub type CpuBackend = burn::backend::Flex<f32>;

/// The CUDA backend (f32; burn fuses element-wise work inside it).
#[cfg(feature = "cuda")]
pub type CudaBackend = burn::backend::Cuda<f32>;

/// Compute device.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum DeviceKind {
    #[default]
    Cpu,
    Cuda,
}

/// The error of asking a build without the `cuda` feature for CUDA.
pub fn no_cuda() -> Error {
    Error::NoCuda
}

/// `on_device!(device, B => body)` evaluates `body` (a `Result`) with the type `B` bound to
/// the device's backend; `body` uses `Default::default()` for the device itself.
#[macro_export]
macro_rules! on_device {
    ($device:expr, $b:ident => $body:expr) => {
        match $device {
            $crate::model::backend::DeviceKind::Cpu => {
                type $b = $crate::model::backend::CpuBackend;
                $body
            }
            #[cfg(feature = "cuda")]
            $crate::model::backend::DeviceKind::Cuda => {
                type $b = $crate::model::backend::CudaBackend;
                $body
            }
            #[cfg(not(feature = "cuda"))]
            $crate::model::backend::DeviceKind::Cuda => Err($crate::model::backend::no_cuda().into()),
        }
    };
}

#[cfg(test)]
mod tests {
    /// Fails when a job builds a backend of its own: outside this module (and test modules),
    /// no source file of the trainer or the CLI names a concrete burn backend.
    #[test]
    fn no_job_builds_a_backend_of_its_own() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut offenders = Vec::new();
        let mut files = Vec::new();
        let mut dirs = vec![root.join("src"), root.join("../src")];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") && !path.ends_with("backend.rs") {
                    files.push(path);
                }
            }
        }
        assert!(files.iter().any(|f| f.ends_with("cmd/train.rs")), "the walk reaches the CLI's command modules");
        for path in files {
            let text = std::fs::read_to_string(&path).unwrap();
            // Unit tests at the end of a file may pin a backend for themselves.
            let body = text.split("#[cfg(test)]").next().unwrap_or("");
            for (n, line) in body.lines().enumerate() {
                let code = line.split("//").next().unwrap_or("");
                for name in ["NdArray", "backend::Flex", "Flex<", "backend::Cuda", "Cuda<", "CpuBackend", "CudaBackend"]
                {
                    if code.contains(name) {
                        offenders.push(format!("{}:{}: {}", path.display(), n + 1, line.trim()));
                    }
                }
            }
        }
        assert!(offenders.is_empty(), "jobs must choose their backend through on_device!:\n{}", offenders.join("\n"));
    }
}
