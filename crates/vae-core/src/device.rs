//! Device choice: `auto`, `cpu`, `cuda[:N]` or `metal`, in one place.

use candle_core::Device;

use crate::{Error, Result};

/// Parses a device name and opens it. `auto` picks CUDA, then Metal, then the CPU.
pub fn select(spec: &str) -> Result<Device> {
    let spec = spec.trim();
    match spec {
        "auto" => {
            if candle_core::utils::cuda_is_available() {
                if let Ok(d) = Device::new_cuda(0) {
                    return Ok(d);
                }
            }
            if candle_core::utils::metal_is_available() {
                if let Ok(d) = Device::new_metal(0) {
                    return Ok(d);
                }
            }
            Ok(Device::Cpu)
        }
        "cpu" => Ok(Device::Cpu),
        "metal" => {
            if !cfg!(feature = "metal") {
                return Err(Error::Device(
                    "--device metal: this build has no Metal support; rebuild with `--features metal`".into(),
                ));
            }
            Device::new_metal(0).map_err(|e| Error::Device(format!("--device metal: {e}")))
        }
        s if s == "cuda" || s.starts_with("cuda:") => {
            let ordinal = match s.strip_prefix("cuda:") {
                None => 0,
                Some(n) => n.parse::<usize>().map_err(|_| {
                    Error::Device(format!("--device {s}: expected cuda:N with N a GPU number"))
                })?,
            };
            if !cfg!(feature = "cuda") {
                return Err(Error::Device(format!(
                    "--device {s}: this build has no CUDA support; rebuild with `--features cuda`"
                )));
            }
            Device::new_cuda(ordinal).map_err(|e| Error::Device(format!("--device {s}: {e}")))
        }
        other => Err(Error::Device(format!(
            "--device {other}: unknown device (expected auto, cpu, cuda, cuda:N or metal)"
        ))),
    }
}

/// Sets up the process for training and inference: candle on the calling thread
/// ([`single_threaded_candle`]) and, with glibc, an allocator that keeps the large buffers of a
/// training step for reuse instead of mapping and unmapping them every step (each fresh mapping
/// costs a page fault per 4 KiB): blocks under 32 MiB come from the heap, the heap is trimmed
/// only beyond 64 MiB of free space, and there are at most as many arenas as threads need.
/// Call it first thing in `main`.
pub fn configure_process() {
    single_threaded_candle();
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let threads = crate::par::available_threads().clamp(1, 64) as i32;
        // SAFETY: mallopt only sets allocator parameters; called before other threads exist.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
            libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20);
            libc::mallopt(libc::M_TOP_PAD, 16 << 20);
            libc::mallopt(libc::M_ARENA_MAX, threads);
        }
    }
}

/// Keeps candle's CPU backend on the calling thread: its own pool (`CANDLE_NUM_THREADS`) and
/// the threads of its matrix products (`RAYON_NUM_THREADS`) are set to one, unless the user set
/// them. vae runs its own threads over shards of a batch, which scales better on the small
/// matrices of a VAE than splitting every operation. Call it first thing in `main`, before any
/// other thread exists and before the first tensor operation (candle reads them once).
pub fn single_threaded_candle() {
    for var in ["CANDLE_NUM_THREADS", "RAYON_NUM_THREADS"] {
        if std::env::var_os(var).is_none() {
            std::env::set_var(var, "1");
        }
    }
}

/// A short human name for logs and metrics.
pub fn name(device: &Device) -> String {
    match device {
        Device::Cpu => "cpu".into(),
        Device::Cuda(_) => "cuda".into(),
        Device::Metal(_) => "metal".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_errors() {
        assert!(select("cpu").unwrap().is_cpu());
        assert!(select("auto").is_ok());
        let e = select("tpu").unwrap_err().to_string();
        assert!(e.contains("--device tpu"), "{e}");
        if !cfg!(feature = "cuda") {
            let e = select("cuda").unwrap_err().to_string();
            assert!(e.contains("--features cuda"), "{e}");
        }
        assert!(select("cuda:x").is_err());
    }
}
