//! `-` for standard input and output: `compress -` reads the picture or IDX file there,
//! `--out -` writes the compressed file (or `decompress`'s one file) there, and the report
//! then goes to standard error.

use std::io::{IsTerminal, Read, Write};
use std::path::Path;

use crate::{InferError, Result};

/// Whether `path` is `-`: standard input or output.
pub fn is_dash(path: &Path) -> bool {
    path.as_os_str() == "-"
}

/// All of standard input.
pub fn read_stdin() -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    std::io::stdin()
        .lock()
        .read_to_end(&mut bytes)
        .map_err(|e| InferError::Input(format!("standard input: {e}")))?;
    if bytes.is_empty() {
        return Err(InferError::Input("standard input: nothing to read".into()));
    }
    Ok(bytes)
}

/// Refuses to write binary data to a terminal (before any work is done).
pub fn check_stdout() -> Result<()> {
    if std::io::stdout().is_terminal() {
        return Err(InferError::Flag(
            "--out -: standard output is a terminal; redirect it to a file or a pipe".into(),
        ));
    }
    Ok(())
}

/// Writes `bytes` to standard output, whole, and flushes it.
pub fn write_stdout(bytes: &[u8]) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .map_err(|e| InferError::Input(format!("standard output: {e}")))
}
