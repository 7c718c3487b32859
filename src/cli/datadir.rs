//! Where the command line's data lives. `--data` names one of:
//!
//! - a data directory: the SQLite database `<dir>/cartflow.db`, seeded once from
//!   `<dir>/cartflow.json` (a [`DataSet`]) while the database is new or empty;
//! - `sqlite:<path>`: an existing SQLite database file;
//! - `postgres://...` / `postgresql://...`: a PostgreSQL database.
//!
//! See `docs/data-format.md`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cartflow::Store;
use cartflow::error::StoreError;
use cartflow::store::{DataSet, DataSetError, Durability, PostgresStore, SqliteStore, StockLevel};

/// The seed file inside a data directory.
pub const DATA_FILE: &str = "cartflow.json";
/// The database file inside a data directory.
pub const DATABASE_FILE: &str = "cartflow.db";

/// Why the data cannot be opened. Each of these exits with status 2 and changes nothing.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The directory does not exist or is not a directory.
    #[error("data directory {0} does not exist or is not a directory")]
    NoDirectory(PathBuf),
    /// The directory holds neither a database nor a seed.
    #[error(
        "data directory {0} holds neither {DATABASE_FILE} nor {DATA_FILE}: put a {DATA_FILE} \
         there to seed a new database (docs/data-format.md)"
    )]
    NoData(PathBuf),
    /// A `sqlite:` location names no file.
    #[error("no SQLite database at {0}; to create one, pass a data directory holding {DATA_FILE}")]
    NoDatabase(PathBuf),
    /// The seed could not be read.
    #[error("cannot read {0}: {1}")]
    Read(PathBuf, io::Error),
    /// The seed is not a valid data set.
    #[error("{0} is not a valid cartflow data file: {1}")]
    Malformed(PathBuf, serde_json::Error),
    /// The seed's records contradict each other.
    #[error("{0} is not a consistent data set: {1}")]
    Inconsistent(PathBuf, String),
    /// The seed holds no store, so the database would count as empty and be seeded again.
    #[error("{0} holds no WebStore (its \"stores\" list is empty): there is nothing to check out")]
    NoStore(PathBuf),
    /// The database could not be opened, seeded or read.
    #[error("{0}: {1}")]
    Database(String, StoreError),
}

/// An opened store and what the built-in inventory provider needs from it.
pub struct Opened {
    /// The store.
    pub store: Arc<dyn Store>,
    /// The stock table, for `Integrations::with_stock_tables`.
    pub stock: Vec<StockLevel>,
    /// Where the data is, for messages.
    pub location: String,
    /// The built-in providers of `integrations.json` beside the database, if any.
    pub providers: Option<PathBuf>,
}

/// The file beside the database that configures the built-in providers per store.
pub const INTEGRATIONS_FILE: &str = "integrations.json";

/// Why an integrations file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum IntegrationsError {
    /// It could not be read.
    #[error("cannot read {0}: {1}")]
    Read(PathBuf, std::io::Error),
    /// It is not a valid configuration.
    #[error("{0} is not a valid integrations file: {1}")]
    Malformed(PathBuf, String),
}

impl Opened {
    /// The engine's integrations: the stock tables, and the built-in providers of `file` (or
    /// of the data directory's `integrations.json`).
    pub fn integrations(
        &self,
        file: Option<&Path>,
    ) -> Result<cartflow::integrations::Integrations, IntegrationsError> {
        let mut integrations = cartflow::integrations::Integrations::with_stock_tables(&self.stock);
        let Some(path) = file.or(self.providers.as_deref()) else {
            return Ok(integrations);
        };
        let text =
            fs::read_to_string(path).map_err(|e| IntegrationsError::Read(path.to_path_buf(), e))?;
        let config: cartflow::integrations::ProviderConfig = serde_json::from_str(&text)
            .map_err(|e| IntegrationsError::Malformed(path.to_path_buf(), e.to_string()))?;
        integrations
            .configure(&config)
            .map_err(|e| IntegrationsError::Malformed(path.to_path_buf(), e.to_string()))?;
        Ok(integrations)
    }
}

/// Opens the store that `spec` (the `--data` value) names; see the module documentation.
pub fn open_store(spec: &str) -> Result<Opened, DataError> {
    if spec.starts_with("postgres://") || spec.starts_with("postgresql://") {
        let location = redact_password(spec);
        let database = |e| DataError::Database(location.clone(), e);
        let store = PostgresStore::connect(spec).map_err(database)?;
        let stock = store.stock().map_err(database)?;
        return Ok(Opened {
            store: Arc::new(store),
            stock,
            location,
            providers: None,
        });
    }
    let store = match spec.strip_prefix("sqlite:") {
        Some(path) => {
            // `sqlite:///abs/path` and `sqlite://rel/path` are spelled as URLs usually are.
            let path = Path::new(path.strip_prefix("//").unwrap_or(path));
            if !path.is_file() {
                return Err(DataError::NoDatabase(path.to_path_buf()));
            }
            open_sqlite(path)?
        }
        None => open_directory(Path::new(spec))?,
    };
    let location = store.path().display().to_string();
    let stock = store
        .stock()
        .map_err(|e| DataError::Database(location.clone(), e))?;
    let providers = store
        .path()
        .parent()
        .map(|dir| dir.join(INTEGRATIONS_FILE))
        .filter(|file| file.is_file());
    Ok(Opened {
        store: Arc::new(store),
        stock,
        location,
        providers,
    })
}

/// A database URL fit for messages: `postgres://user:secret@host/db` -> `postgres://user:***@host/db`.
fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.split_once('@') {
        Some((credentials, host)) => match credentials.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

fn open_sqlite(path: &Path) -> Result<SqliteStore, DataError> {
    SqliteStore::open(path, Durability::Normal)
        .map_err(|e| DataError::Database(path.display().to_string(), e))
}

/// Opens `<dir>/cartflow.db`, importing `<dir>/cartflow.json` when the database is new or
/// empty. The seed is read and checked before the database is touched, so a bad seed
/// creates nothing.
fn open_directory(dir: &Path) -> Result<SqliteStore, DataError> {
    if !dir.is_dir() {
        return Err(DataError::NoDirectory(dir.to_path_buf()));
    }
    let db = dir.join(DATABASE_FILE);
    let seed_file = dir.join(DATA_FILE);
    let existed = db.exists();
    let has_seed = seed_file.exists();
    if !existed && !has_seed {
        return Err(DataError::NoData(dir.to_path_buf()));
    }
    let seed = if existed || !has_seed {
        None
    } else {
        Some(load(dir)?)
    };
    let store = open_sqlite(&db)?;
    let location = db.display().to_string();
    let database = |e| DataError::Database(location.clone(), e);
    if !store.is_empty().map_err(database)? {
        return Ok(store);
    }
    let seed = match seed {
        Some(seed) => seed,
        None if has_seed => load(dir)?,
        // An empty database and nothing to seed it with: it is what it is.
        None => return Ok(store),
    };
    match store.import(&seed) {
        Ok(()) => Ok(store),
        // Another process seeded it first: the same seed, so use what it wrote.
        Err(StoreError::Invariant(_)) if !store.is_empty().map_err(database)? => Ok(store),
        Err(e) => {
            if !existed {
                // Leave the directory as it was: the database this call created goes too.
                drop(store);
                remove_database(&db);
            }
            Err(database(e))
        }
    }
}

/// Reads and checks the seed of `dir`.
pub fn load(dir: &Path) -> Result<DataSet, DataError> {
    let path = dir.join(DATA_FILE);
    let text = fs::read_to_string(&path).map_err(|e| DataError::Read(path.clone(), e))?;
    let data: DataSet =
        serde_json::from_str(&text).map_err(|e| DataError::Malformed(path.clone(), e))?;
    data.validate()
        .map_err(|e: DataSetError| DataError::Inconsistent(path.clone(), e.to_string()))?;
    let mut stock: Vec<_> = data.stock.iter().map(|s| (s.store_id, &s.sku)).collect();
    stock.sort();
    if let Some(pair) = stock.windows(2).find(|pair| pair[0] == pair[1]) {
        let (store, sku) = pair[0];
        return Err(DataError::Inconsistent(
            path,
            format!("store {store} lists SKU {sku} twice in \"stock\""),
        ));
    }
    if data.stores.is_empty() {
        return Err(DataError::NoStore(path));
    }
    Ok(data)
}

/// Removes a SQLite database and the files SQLite keeps beside it; missing ones are fine.
pub fn remove_database(db: &Path) {
    let mut names = vec![db.to_path_buf()];
    for suffix in ["-wal", "-shm", "-journal"] {
        let mut name = db.as_os_str().to_owned();
        name.push(suffix);
        names.push(PathBuf::from(name));
    }
    for name in names {
        let _ = fs::remove_file(name);
    }
}
