//! `cartflow import` and `cartflow export`: a data set (the JSON of `docs/data-format.md`)
//! into an empty database, and every record of a database back out, the same on SQLite
//! and PostgreSQL.

use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use cartflow::error::StoreError;
use cartflow::store::{DataSet, PostgresStore, SqliteStore};

use crate::cli::datadir::{self, DATA_FILE, DATABASE_FILE, DataError};

/// Exit status for a usage or data error.
const USAGE: u8 = 2;

/// What to import, as the command line gave it.
#[derive(Debug, Clone)]
pub struct ImportRequest {
    /// A data directory, `sqlite:<path>` or a PostgreSQL URL.
    pub data: String,
    /// The data set file.
    pub file: PathBuf,
}

/// What to export, as the command line gave it.
#[derive(Debug, Clone)]
pub struct ExportRequest {
    /// A data directory, `sqlite:<path>` or a PostgreSQL URL.
    pub data: String,
    /// Where to write the data set; stdout when absent.
    pub file: Option<PathBuf>,
}

/// Why an import or export cannot go ahead. Each exits with status 2 and changes nothing.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// `--data` or `--file` is not usable (see [`DataError`]).
    #[error(transparent)]
    Data(#[from] DataError),
    /// The database already holds records: an import would mix two data sets.
    #[error(
        "{0} is not empty (it holds a WebStore): import only seeds an empty database; export it \
         first if it is to be kept, then import into a new one"
    )]
    NotEmpty(String),
    /// There is no database to export (a data directory that was never used).
    #[error(
        "{0} holds no {DATABASE_FILE} yet: nothing to export (its seed, if any, is {DATA_FILE})"
    )]
    NoDatabase(PathBuf),
    /// The exported data could not be written.
    #[error("cannot write {0}: {1}")]
    Write(String, io::Error),
}

/// Runs `cartflow import`: exit status 0 once every record is committed, 2 otherwise (and
/// then nothing was written).
pub fn run_import(request: &ImportRequest) -> ExitCode {
    match import(request) {
        Ok(summary) => {
            errln!("cartflow import: {summary}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            errln!("cartflow import: {e}");
            ExitCode::from(USAGE)
        }
    }
}

/// Runs `cartflow export`: the data set on stdout or in `--file`; exit status 0, or 2 when
/// the database cannot be read or the output written.
pub fn run_export(request: &ExportRequest) -> ExitCode {
    match export(request) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            errln!("cartflow export: {e}");
            ExitCode::from(USAGE)
        }
    }
}

/// A database opened for a transfer, by its own type (the trait has no import or export).
enum Database {
    Sqlite {
        store: SqliteStore,
        /// This command created the file, so a failed import removes it again.
        created: bool,
    },
    Postgres(Box<PostgresStore>),
}

impl Database {
    fn is_empty(&self) -> Result<bool, StoreError> {
        match self {
            Database::Sqlite { store, .. } => store.is_empty(),
            Database::Postgres(store) => store.is_empty(),
        }
    }

    fn import(&self, data: &DataSet) -> Result<(), StoreError> {
        match self {
            Database::Sqlite { store, .. } => store.import(data),
            Database::Postgres(store) => store.import(data),
        }
    }

    fn export(&self) -> Result<DataSet, StoreError> {
        match self {
            Database::Sqlite { store, .. } => store.export(),
            Database::Postgres(store) => store.export(),
        }
    }

    /// Closes the database; one this command created is removed with the files beside it.
    fn discard_if_created(self) {
        if let Database::Sqlite {
            store,
            created: true,
        } = self
        {
            let path = store.path().to_path_buf();
            drop(store);
            datadir::remove_database(&path);
        }
    }
}

/// Where `spec` puts the database: the SQLite file of a data directory or of a `sqlite:`
/// location, or `None` for PostgreSQL.
fn sqlite_file(spec: &str) -> Result<Option<PathBuf>, DataError> {
    if datadir::is_postgres(spec) {
        return Ok(None);
    }
    match spec.strip_prefix("sqlite:") {
        Some(path) => Ok(Some(datadir::sqlite_path(path).to_path_buf())),
        None => {
            let dir = Path::new(spec);
            datadir::check_directory(dir)?;
            Ok(Some(dir.join(DATABASE_FILE)))
        }
    }
}

/// Opens the database `spec` names; `create` allows a new SQLite file.
fn open(spec: &str, create: bool) -> Result<(Database, String), TransferError> {
    let Some(path) = sqlite_file(spec)? else {
        let location = datadir::redact_password(spec);
        let store =
            PostgresStore::connect(spec).map_err(|e| DataError::Database(location.clone(), e))?;
        return Ok((Database::Postgres(Box::new(store)), location));
    };
    let existed = path.exists();
    if !existed && !create {
        return Err(match spec.strip_prefix("sqlite:") {
            Some(_) => DataError::NoDatabase(path).into(),
            None => TransferError::NoDatabase(PathBuf::from(spec)),
        });
    }
    let store = datadir::open_sqlite(&path).inspect_err(|_| {
        if !existed {
            datadir::remove_database(&path);
        }
    })?;
    Ok((
        Database::Sqlite {
            store,
            created: !existed,
        },
        path.display().to_string(),
    ))
}

fn import(request: &ImportRequest) -> Result<String, TransferError> {
    // The file is read and checked before any database is opened or created.
    let data = datadir::load_file(&request.file)?;
    let (database, location) = open(&request.data, true)?;
    let database_error = |e| TransferError::Data(DataError::Database(location.clone(), e));
    let outcome = match database.is_empty() {
        Ok(true) => database.import(&data).map_err(database_error),
        Ok(false) => Err(TransferError::NotEmpty(location.clone())),
        Err(e) => Err(database_error(e)),
    };
    match outcome {
        Ok(()) => Ok(format!(
            "{} imported into {location}: {} store(s), {} cart(s), {} user(s)",
            request.file.display(),
            data.stores.len(),
            data.carts.len(),
            data.users.len()
        )),
        Err(e) => {
            // One transaction: nothing of it was committed; a file made for it goes too.
            database.discard_if_created();
            Err(e)
        }
    }
}

fn export(request: &ExportRequest) -> Result<(), TransferError> {
    let (database, location) = open(&request.data, false)?;
    let data = database
        .export()
        .map_err(|e| DataError::Database(location.clone(), e))?;
    let mut text = serde_json::to_string_pretty(&data).map_err(|e| {
        TransferError::Write(
            "the data set".into(),
            io::Error::new(io::ErrorKind::InvalidData, e),
        )
    })?;
    text.push('\n');
    match &request.file {
        Some(file) => write_whole(file, &text),
        None => write_stdout(&text),
    }
}

/// Writes `text` to stdout; a reader that has gone (`cartflow export | head`) is not an error.
fn write_stdout(text: &str) -> Result<(), TransferError> {
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => {
            Err(TransferError::Write("stdout".into(), e))
        }
        _ => Ok(()),
    }
}

/// Writes `text` to `file` through a temporary file beside it, renamed into place: a failed
/// write leaves any earlier file as it was.
fn write_whole(file: &Path, text: &str) -> Result<(), TransferError> {
    let mut temporary = file.as_os_str().to_owned();
    // The process ID keeps two processes writing the same file apart; one process writes
    // each file once.
    temporary.push(format!(".{}.tmp", std::process::id()));
    let temporary = PathBuf::from(temporary);
    let written = fs::write(&temporary, text).and_then(|()| fs::rename(&temporary, file));
    written.map_err(|e| {
        let _ = fs::remove_file(&temporary);
        TransferError::Write(file.display().to_string(), e)
    })
}
