//! Reading user files: whole files, gzipped or not.

use anyhow::Context;
use std::io::Read;
use std::path::Path;

pub use crate::checkpoint::write_atomic;

/// Reads a whole file, decompressing it when it starts with the gzip magic bytes 0x1f 0x8b;
/// errors name the file.
pub fn read_maybe_gz(path: &Path) -> anyhow::Result<Vec<u8>> {
    let raw = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .with_context(|| {
                format!(
                    "{} is not a valid gzip file (corrupt or truncated)",
                    path.display()
                )
            })?;
        Ok(out)
    } else {
        Ok(raw)
    }
}
