//! The data directory: `<dir>/cartflow.json` holds a [`DataSet`] (see `docs/data-format.md`).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use cartflow::store::{DataSet, DataSetError};

/// The file name inside a data directory.
pub const DATA_FILE: &str = "cartflow.json";

/// Why a data directory cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    /// The directory does not exist or is not a directory.
    #[error("data directory {0} does not exist or is not a directory")]
    NoDirectory(PathBuf),
    /// The data file could not be read.
    #[error("cannot read {0}: {1}")]
    Read(PathBuf, io::Error),
    /// The data file is not a valid data set.
    #[error("{0} is not a valid cartflow data file: {1}")]
    Malformed(PathBuf, serde_json::Error),
    /// The records contradict each other.
    #[error("{0} is not a consistent data set: {1}")]
    Inconsistent(PathBuf, DataSetError),
    /// The data file could not be written.
    #[error("cannot write {0}: {1}")]
    Write(PathBuf, io::Error),
}

/// The path of the data file of `dir`.
pub fn data_file(dir: &Path) -> PathBuf {
    dir.join(DATA_FILE)
}

/// Reads and validates the data set of `dir`.
pub fn load(dir: &Path) -> Result<DataSet, DataDirError> {
    if !dir.is_dir() {
        return Err(DataDirError::NoDirectory(dir.to_path_buf()));
    }
    let path = data_file(dir);
    let text = fs::read_to_string(&path).map_err(|e| DataDirError::Read(path.clone(), e))?;
    let data: DataSet =
        serde_json::from_str(&text).map_err(|e| DataDirError::Malformed(path.clone(), e))?;
    data.validate()
        .map_err(|e| DataDirError::Inconsistent(path, e))?;
    Ok(data)
}

/// Replaces the data file of `dir` with `data`, atomically: the new text goes to a temporary
/// file in the same directory, is flushed to disk, and is renamed over the old file, so a
/// crash leaves either the old file or the new one, never half of one.
pub fn save(dir: &Path, data: &DataSet) -> Result<(), DataDirError> {
    let path = data_file(dir);
    let mut text = serde_json::to_string_pretty(data)
        .map_err(|e| DataDirError::Write(path.clone(), io::Error::other(e)))?;
    text.push('\n');
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let temp = dir.join(format!(".{DATA_FILE}.{}-{nonce}.tmp", std::process::id()));
    let written = write_synced(&temp, text.as_bytes()).and_then(|()| fs::rename(&temp, &path));
    if let Err(e) = written {
        let _ = fs::remove_file(&temp);
        return Err(DataDirError::Write(path, e));
    }
    // Make the rename itself durable; not every platform can open a directory for this.
    if let Ok(directory) = File::open(dir) {
        let _ = directory.sync_all();
    }
    Ok(())
}

fn write_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new().write(true).create_new(true).open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}
