//! Writing outputs so that a failure leaves nothing behind: a temporary name in the
//! destination directory, verified, fsynced, then renamed into place.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Errors writing an output, naming the path.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: verification failed: {reason}")]
    Verify { path: PathBuf, reason: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> WriteError + '_ {
    move |source| WriteError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A hidden temporary name beside `path`.
fn temp_beside(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn sync_dir(dir: &Path) -> Result<(), WriteError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))
}

/// Writes `bytes` to `path` atomically: to a temporary file beside it, read back and passed
/// to `verify`, fsynced, renamed over `path`, and the directory fsynced. On any error the
/// temporary file is removed and `path` is untouched.
pub fn write_atomic(
    path: &Path,
    bytes: &[u8],
    verify: impl FnOnce(&[u8]) -> Result<(), String>,
) -> Result<(), WriteError> {
    let tmp = temp_beside(path);
    let result = (|| {
        let mut f = fs::File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(bytes).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
        drop(f);
        let back = fs::read(&tmp).map_err(io(&tmp))?;
        verify(&back).map_err(|reason| WriteError::Verify {
            path: path.to_path_buf(),
            reason,
        })?;
        fs::rename(&tmp, path).map_err(io(path))?;
        sync_dir(parent_of(path))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Writes a directory of files atomically: into a temporary directory beside `dir`, each
/// file fsynced, then the directory renamed to `dir` (which must not exist). On any error the
/// temporary directory is removed.
pub fn write_atomic_dir(dir: &Path, files: &[(String, Vec<u8>)]) -> Result<(), WriteError> {
    if dir.exists() {
        return Err(WriteError::Io {
            path: dir.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::AlreadyExists, "already exists"),
        });
    }
    let tmp = temp_beside(dir);
    let result = (|| {
        fs::create_dir(&tmp).map_err(io(&tmp))?;
        for (name, bytes) in files {
            let p = tmp.join(name);
            if let Some(parent) = p.parent() {
                fs::create_dir_all(parent).map_err(io(parent))?;
            }
            let mut f = fs::File::create(&p).map_err(io(&p))?;
            f.write_all(bytes).map_err(io(&p))?;
            f.sync_all().map_err(io(&p))?;
        }
        sync_dir(&tmp)?;
        fs::rename(&tmp, dir).map_err(io(dir))?;
        sync_dir(parent_of(dir))
    })();
    if result.is_err() {
        let _ = fs::remove_dir_all(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_verification_leaves_nothing() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("out.vbb");
        let e = write_atomic(&p, b"abc", |_| Err("no".into())).unwrap_err();
        assert!(e.to_string().contains("verification failed"), "{e}");
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 0);
        write_atomic(&p, b"abc", |b| {
            if b == b"abc" {
                Ok(())
            } else {
                Err("x".into())
            }
        })
        .unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"abc");
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 1);
    }

    #[test]
    fn directory_is_written_whole_or_not_at_all() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("imgs");
        write_atomic_dir(
            &out,
            &[("a/1.png".into(), vec![1]), ("2.png".into(), vec![2])],
        )
        .unwrap();
        assert_eq!(fs::read(out.join("a/1.png")).unwrap(), [1]);
        // Existing destination: refused, nothing else created.
        assert!(write_atomic_dir(&out, &[]).is_err());
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 1);
        // A name that cannot be created (a file where a directory is needed) cleans up.
        let out2 = d.path().join("imgs2");
        let e = write_atomic_dir(&out2, &[("x".into(), vec![1]), ("x/y".into(), vec![2])]);
        assert!(e.is_err());
        assert!(!out2.exists());
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 1);
    }
}
