//! The template a command runs: `--template FILE` when given; else the `template.json` of the
//! data directory (or beside a `sqlite:` database file) when there is one; else the built-in
//! standard template. The file is read and checked before any store is opened, so a bad
//! template stops the command (exit 2) having touched nothing. See `docs/templates.md`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use cartflow::machine::{TemplateFileError, TransitionTable};

use crate::cli::datadir::{is_postgres, sqlite_path};
use crate::cli::print_stdout;

/// The file in a data directory that holds its template.
pub const TEMPLATE_FILE: &str = "template.json";

/// Why a command's template cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// The file could not be read.
    #[error("cannot read the template {0}: {1}")]
    Read(PathBuf, io::Error),
    /// The file is not a valid template.
    #[error("the template {0} is refused: {1}")]
    Invalid(PathBuf, TemplateFileError),
}

/// The table of the template a command runs: `flag` (`--template`) when given, else the
/// `template.json` beside the data that `data` (a `--data` value) names, else the standard
/// template's.
pub fn table(data: Option<&str>, flag: Option<&Path>) -> Result<TransitionTable, TemplateError> {
    if let Some(path) = flag {
        return read(path);
    }
    match data.and_then(folder).map(|dir| dir.join(TEMPLATE_FILE)) {
        Some(file) if file.is_file() => read(&file),
        _ => Ok(TransitionTable::standard()),
    }
}

/// The folder whose `template.json` a `--data` value uses: the data directory itself, or the
/// folder of a `sqlite:` file; none for PostgreSQL.
fn folder(data: &str) -> Option<PathBuf> {
    if is_postgres(data) {
        return None;
    }
    match data.strip_prefix("sqlite:") {
        Some(path) => sqlite_path(path).parent().map(Path::to_path_buf),
        None => Some(PathBuf::from(data)),
    }
}

/// Reads and checks a template file.
fn read(path: &Path) -> Result<TransitionTable, TemplateError> {
    let text = fs::read_to_string(path).map_err(|e| TemplateError::Read(path.to_path_buf(), e))?;
    TransitionTable::from_json(&text).map_err(|e| TemplateError::Invalid(path.to_path_buf(), e))
}

/// `cartflow diagram`: prints `draw` of the command's template's table; exit 2 when the
/// template is refused.
pub fn print_diagram(
    data: Option<&str>,
    flag: Option<&Path>,
    draw: fn(&TransitionTable) -> String,
) -> ExitCode {
    match table(data, flag) {
        Ok(table) => print_stdout(&draw(&table)),
        Err(e) => {
            errln!("cartflow diagram: {e}");
            ExitCode::from(2)
        }
    }
}
