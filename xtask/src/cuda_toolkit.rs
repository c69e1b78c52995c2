//! The CUDA toolkit `cargo xtask cuda-build` compiles with: an installed one (`CUDA_HOME` or
//! `CUDA_PATH` holding `bin/nvcc`, else `nvcc` on `PATH`), or the CUDA 13.0 compiler and
//! libraries of NVIDIA's Python wheels, installed once into a cache. Either way the link gets a
//! stub `libcuda.so`: the driver library ships with the NVIDIA driver, not with any toolkit
//! wheel, and a machine without a GPU has none.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::root;

/// The wheels of the CUDA 13.0 toolkit, pinned to the versions the build was checked with.
/// `nvidia-nvvm` and `nvidia-cuda-crt` are pinned too: left free, pip takes the newest NVVM,
/// whose PTX (ISA 9.5 for NVVM 13.5) neither the 13.0 `ptxas` nor a CUDA 13.0 driver (580)
/// accepts. `nvidia-curand` has its own numbering (soname `libcurand.so.10`).
pub const PINS: &[&str] = &[
    "nvidia-cuda-nvcc==13.0.88",
    "nvidia-nvvm==13.0.88",
    "nvidia-cuda-crt==13.0.88",
    "nvidia-cuda-cccl==13.0.85",
    "nvidia-cuda-runtime==13.0.96",
    "nvidia-cuda-nvrtc==13.0.88",
    "nvidia-cublas==13.0.2.14",
    "nvidia-curand==10.4.5.25",
];

/// `CUDARC_CUDA_VERSION` for the wheels above (cudarc's bindings of CUDA 13.0).
const PIP_CUDA_VERSION: &str = "13000";

/// What the build needs to know about the toolkit.
pub struct Toolkit {
    /// `CUDA_ROOT`, `CUDA_PATH` and `CUDA_HOME` of the build (holds `bin/nvcc`).
    pub root: PathBuf,
    /// Directories with unversioned `.so` names for the linker (`LIBRARY_PATH`).
    pub link_dirs: Vec<PathBuf>,
    /// Directories with the run-time libraries (`libcudart.so.13`...), for the smoke test.
    pub runtime_dirs: Vec<PathBuf>,
    /// The directory of the stub `libcuda.so` / `libcuda.so.1`.
    pub stub_dir: PathBuf,
    /// `CUDARC_CUDA_VERSION` to set, when known; otherwise cudarc asks `nvcc --version`.
    pub cuda_version: Option<&'static str>,
    /// One line for the log.
    pub describe: String,
}

/// `$VAE_CUDA_CACHE`, default `~/.cache/vae-cuda`.
pub fn cache_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("VAE_CUDA_CACHE").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .context("cache: neither VAE_CUDA_CACHE nor HOME is set")?;
    Ok(PathBuf::from(home).join(".cache/vae-cuda"))
}

/// Finds or installs the toolkit, then writes the stub driver library into the cache.
pub fn prepare(cache: &Path) -> Result<Toolkit> {
    std::fs::create_dir_all(cache)
        .with_context(|| format!("cache: creating {}", cache.display()))?;
    let stub_dir = cache.join("stub");
    write_stub(&stub_dir)?;
    match installed() {
        Some(root) => Ok(installed_toolkit(root, stub_dir)),
        None => pip_toolkit(cache, stub_dir),
    }
}

/// An installed toolkit: `CUDA_HOME` / `CUDA_PATH` with `bin/nvcc`, else `nvcc` on `PATH`.
fn installed() -> Option<PathBuf> {
    for var in ["CUDA_HOME", "CUDA_PATH"] {
        if let Some(dir) = std::env::var_os(var).filter(|d| !d.is_empty()) {
            let dir = PathBuf::from(dir);
            if dir.join("bin/nvcc").is_file() {
                return Some(dir);
            }
        }
    }
    let path = std::env::var_os("PATH")?;
    let nvcc = std::env::split_paths(&path)
        .map(|d| d.join("nvcc"))
        .find(|p| p.is_file())?;
    let nvcc = nvcc.canonicalize().unwrap_or(nvcc);
    Some(nvcc.parent()?.parent()?.to_path_buf())
}

fn installed_toolkit(root: PathBuf, stub_dir: PathBuf) -> Toolkit {
    let dirs: Vec<PathBuf> = ["lib64", "lib", "targets/x86_64-linux/lib"]
        .iter()
        .map(|d| root.join(d))
        .filter(|d| d.is_dir())
        .collect();
    let mut link_dirs = dirs.clone();
    link_dirs.extend(dirs.iter().map(|d| d.join("stubs")).filter(|d| d.is_dir()));
    Toolkit {
        describe: format!("installed CUDA toolkit {}", root.display()),
        root,
        link_dirs,
        runtime_dirs: dirs,
        stub_dir,
        cuda_version: None,
    }
}

/// The wheels of [`PINS`] in a venv of the cache, reused while its stamp lists the same pins,
/// and a CUDA root the build scripts understand: `bin`, `include`, `nvvm` and `lib` linked from
/// the wheels' `nvidia/cu13`, and `lib64` with the unversioned names the linker looks for.
fn pip_toolkit(cache: &Path, stub_dir: PathBuf) -> Result<Toolkit> {
    let venv = cache.join("venv");
    let stamp = cache.join("installed.txt");
    let want = format!("{}\n", PINS.join("\n"));
    let reuse = std::fs::read_to_string(&stamp).is_ok_and(|s| s == want)
        && cu13(&venv).is_ok_and(|d| d.join("bin/nvcc").is_file());
    if reuse {
        eprintln!("CUDA 13.0 wheels: reusing {}", venv.display());
    } else {
        eprintln!(
            "CUDA 13.0 wheels: installing {} packages from PyPI into {} (about 1.2 GB)",
            PINS.len(),
            venv.display()
        );
        let _ = std::fs::remove_file(&stamp);
        if venv.exists() {
            std::fs::remove_dir_all(&venv)
                .with_context(|| format!("pip: removing the old {}", venv.display()))?;
        }
        let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
        let status = Command::new(&python)
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .with_context(|| format!("python venv: cannot run `{python}` (install Python 3)"))?;
        if !status.success() {
            bail!("python venv: `{python} -m venv {}` failed ({status}; on Debian: apt-get install python3-venv)", venv.display());
        }
        let status = Command::new(venv.join("bin/python"))
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--no-input",
                "--progress-bar",
                "off",
                "--only-binary",
                ":all:",
            ])
            .args(PINS)
            .status()
            .context("pip: cannot run the venv's python")?;
        if !status.success() {
            bail!("pip: installing {} failed ({status})", PINS.join(" "));
        }
        let nvcc = cu13(&venv)?.join("bin/nvcc");
        if !nvcc.is_file() {
            bail!("nvcc: the wheels installed no {}", nvcc.display());
        }
        std::fs::write(&stamp, &want)
            .with_context(|| format!("cache: writing {}", stamp.display()))?;
    }
    let cu13 = cu13(&venv)?;
    let root = cache.join("root");
    assemble_root(&cu13, &root)?;
    Ok(Toolkit {
        describe: format!("CUDA 13.0 wheels of PyPI, {}", cu13.display()),
        link_dirs: vec![root.join("lib64")],
        runtime_dirs: vec![cu13.join("lib")],
        root,
        stub_dir,
        cuda_version: Some(PIP_CUDA_VERSION),
    })
}

/// `site-packages/nvidia/cu13` of the venv (the Python version in the path is the venv's).
fn cu13(venv: &Path) -> Result<PathBuf> {
    let lib = venv.join("lib");
    let entries =
        std::fs::read_dir(&lib).with_context(|| format!("pip: reading {}", lib.display()))?;
    for e in entries.flatten() {
        let dir = e.path().join("site-packages/nvidia/cu13");
        if e.file_name().to_string_lossy().starts_with("python") && dir.is_dir() {
            return Ok(dir);
        }
    }
    bail!("pip: no site-packages/nvidia/cu13 under {}", lib.display())
}

fn assemble_root(cu13: &Path, root: &Path) -> Result<()> {
    let ctx = || format!("toolkit: assembling {}", root.display());
    if root.exists() {
        std::fs::remove_dir_all(root).with_context(ctx)?;
    }
    let lib64 = root.join("lib64");
    std::fs::create_dir_all(&lib64).with_context(ctx)?;
    // `nvcc.profile` finds nvvm, include and lib from `bin/..`: all four are linked.
    for d in ["bin", "include", "nvvm", "lib"] {
        std::os::unix::fs::symlink(cu13.join(d), root.join(d)).with_context(ctx)?;
    }
    let mut names: Vec<String> = std::fs::read_dir(cu13.join("lib"))
        .with_context(ctx)?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    // The shortest versioned name first: `libfoo.so` points at `libfoo.so.13`, not `.so.13.0`.
    names.sort_by_key(|n| (n.len(), n.clone()));
    for name in names {
        if let Some(plain) = unversioned(&name) {
            let link = lib64.join(&plain);
            if !link.exists() {
                std::os::unix::fs::symlink(cu13.join("lib").join(&name), link).with_context(ctx)?;
            }
        }
    }
    for need in [
        "libcudart.so",
        "libcublas.so",
        "libcublasLt.so",
        "libcurand.so",
        "libnvrtc.so",
    ] {
        if !lib64.join(need).exists() {
            bail!(
                "toolkit: the wheels lack {need} (in {})",
                cu13.join("lib").display()
            );
        }
    }
    Ok(())
}

/// `libcudart.so.13` -> `libcudart.so`; `None` for names without a version after `.so`.
fn unversioned(name: &str) -> Option<String> {
    let (stem, version) = name.split_once(".so.")?;
    let numeric = !version.is_empty()
        && version
            .split('.')
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    (name.starts_with("lib") && numeric).then(|| format!("{stem}.so"))
}

/// The `cu*` driver functions declared in cudarc's bindings (`src/driver/sys/mod.rs`).
///
/// How the names are found, and why this is enough: cudarc links `libcuda` dynamically, and
/// every driver function it can call is declared in that one generated file, inside
/// `extern "C" { fn cuName(...) -> CUresult; }` blocks, one declaration per line beginning
/// with `fn cu` (its public wrappers are `pub unsafe fn` lines and are not matched). Taking
/// every such line, whatever `cfg` guards it, gives a superset of the symbols a build of any
/// CUDA version can reference; the file read is the one of the exact cudarc version of
/// Cargo.lock, located by `cargo metadata`. A stub defining one name too many costs nothing,
/// and one missing would make the link fail with `undefined reference`, never silently.
pub fn driver_functions(bindings: &str) -> BTreeSet<String> {
    bindings
        .lines()
        .filter_map(|line| {
            let rest = line.trim_start().strip_prefix("fn ")?;
            let name = &rest[..rest.find('(')?];
            let ok = name.starts_with("cu")
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            ok.then(|| name.to_string())
        })
        .collect()
}

/// cudarc's `src/driver/sys/mod.rs`, of the version Cargo.lock resolves with `cuda` on.
fn cudarc_bindings() -> Result<(PathBuf, String)> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(root())
        .args([
            "metadata",
            "--format-version",
            "1",
            "--locked",
            "--features",
            "vae-core/cuda",
        ])
        .output()
        .context("stub: cannot run cargo metadata")?;
    if !out.status.success() {
        bail!(
            "stub: cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let meta: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("stub: reading cargo metadata")?;
    let manifest = meta["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == "cudarc")
        .and_then(|p| p["manifest_path"].as_str())
        .context("stub: cudarc is not in the dependency graph of vae-core/cuda")?;
    let path = Path::new(manifest)
        .parent()
        .context("stub: cudarc's manifest path")?
        .join("src/driver/sys/mod.rs");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("stub: reading {}", path.display()))?;
    Ok((path, text))
}

/// CUDA_ERROR_STUB_LIBRARY: "the CUDA driver that the application has loaded is a stub
/// library", the code NVIDIA's own stubs return.
const STUB_ERROR: u32 = 34;

/// The C source of the stub: every function returns [`STUB_ERROR`], except the two that name
/// errors, so that a program calling the stub says what happened.
fn stub_source(names: &BTreeSet<String>) -> String {
    let mut c = String::from(
        "/* Generated by `cargo xtask cuda-build`: a stub of the NVIDIA driver library for\n   \
         linking on machines without one. At run time the driver's libcuda.so.1 replaces it. */\n\
         #include <stddef.h>\n",
    );
    c.push_str(&format!(
        "static const char stub_name[] = \"CUDA_ERROR_STUB_LIBRARY\";\n\
         static const char stub_text[] = \"libcuda.so.1 is the link-time stub of cargo xtask \
         cuda-build, not the NVIDIA driver\";\n\
         int cuGetErrorName(int e, const char **s) {{ (void)e; if (s) *s = stub_name; return 0; }}\n\
         int cuGetErrorString(int e, const char **s) {{ (void)e; if (s) *s = stub_text; return 0; }}\n\
         #define STUB(f) int f(void) {{ return {STUB_ERROR}; }}\n"
    ));
    for n in names {
        if n != "cuGetErrorName" && n != "cuGetErrorString" {
            c.push_str(&format!("STUB({n})\n"));
        }
    }
    c
}

/// Writes `libcuda.so.1` (and the `libcuda.so` link) into `dir`, compiled with `cc -shared`;
/// kept as it is while its source is unchanged.
fn write_stub(dir: &Path) -> Result<()> {
    let (path, bindings) = cudarc_bindings()?;
    let names = driver_functions(&bindings);
    // cudarc 0.19 declares 514; far fewer means the file is not what this parser expects.
    if names.len() < 200 || !names.contains("cuInit") {
        bail!(
            "stub: found only {} driver functions in {}",
            names.len(),
            path.display()
        );
    }
    let src = stub_source(&names);
    let c_file = dir.join("libcuda-stub.c");
    let so = dir.join("libcuda.so.1");
    let link = dir.join("libcuda.so");
    if std::fs::read_to_string(&c_file).is_ok_and(|s| s == src) && so.is_file() && link.exists() {
        return Ok(());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("stub: creating {}", dir.display()))?;
    std::fs::write(&c_file, &src).with_context(|| format!("stub: writing {}", c_file.display()))?;
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let status = Command::new(&cc)
        .args(["-shared", "-fPIC", "-O1", "-Wl,-soname,libcuda.so.1", "-o"])
        .arg(&so)
        .arg(&c_file)
        .status()
        .with_context(|| format!("stub: cannot run the C compiler `{cc}`"))?;
    if !status.success() {
        bail!(
            "stub: `{cc} -shared` of {} failed ({status})",
            c_file.display()
        );
    }
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink("libcuda.so.1", &link)
        .with_context(|| format!("stub: linking {}", link.display()))?;
    eprintln!(
        "stub libcuda.so.1: {} driver functions from {}",
        names.len(),
        path.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unversioned_names() {
        assert_eq!(
            unversioned("libcudart.so.13").as_deref(),
            Some("libcudart.so")
        );
        assert_eq!(
            unversioned("libnvrtc-builtins.so.13.0").as_deref(),
            Some("libnvrtc-builtins.so")
        );
        assert_eq!(unversioned("libcudart_static.a"), None);
        assert_eq!(unversioned("libcublas.so"), None);
        assert_eq!(unversioned("libfoo.so.13.py"), None);
        assert_eq!(unversioned("cmake"), None);
    }

    #[test]
    fn driver_functions_are_the_extern_declarations() {
        let src = "pub unsafe fn cuInit(Flags: ::core::ffi::c_uint) -> CUresult {\n\
                   #[cfg(not(feature = \"dynamic-loading\"))]\n    {\n        extern \"C\" {\n\
                   \x20           fn cuInit(Flags: ::core::ffi::c_uint) -> CUresult;\n\
                   \x20           fn cuMemAlloc_v2(dptr: *mut CUdeviceptr, n: usize) -> CUresult;\n\
                   \x20           fn helper(x: u32);\n        }\n    }\n}\n\
                   let _f = load::<_F>(\"cuCtxCreate_v2\");\n";
        let names: Vec<String> = driver_functions(src).into_iter().collect();
        assert_eq!(names, ["cuInit", "cuMemAlloc_v2"]);
    }

    #[test]
    fn stub_defines_each_name_once() {
        let names: BTreeSet<String> = ["cuInit", "cuGetErrorString", "cuDeviceGet"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let c = stub_source(&names);
        assert!(c.contains("STUB(cuInit)") && c.contains("STUB(cuDeviceGet)"));
        assert_eq!(c.matches("cuGetErrorString(").count(), 1);
        assert!(!c.contains("STUB(cuGetErrorString)"));
    }
}
