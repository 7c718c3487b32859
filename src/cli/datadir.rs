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

use cartflow::Engine;
use cartflow::Store;
use cartflow::error::StoreError;
use cartflow::integrations::{Integrations, ProviderConfig};
use cartflow::machine::Template;
use cartflow::model::{ProviderKind, WebStore};
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
    /// `--data` names a file where a data directory or a `sqlite:` location belongs; the
    /// second field says what was probably meant.
    #[error("{0} is a file, not a data directory: {1}")]
    NotADirectory(PathBuf, String),
    /// The directory holds neither a database nor a seed.
    #[error(
        "data directory {0} holds neither {DATABASE_FILE} nor {DATA_FILE}: put a {DATA_FILE} \
         there to seed a new database (docs/data-format.md)"
    )]
    NoData(PathBuf),
    /// A `sqlite:` location names no file.
    #[error(
        "no SQLite database at {0}; to create one, pass a data directory holding {DATA_FILE}, \
         or seed it with `cartflow import --data sqlite:{0} --file <dataset.json>`"
    )]
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
    /// The data set holds no store, so the database would count as empty and be seeded again.
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
    /// The store's WebStores, for the start-up check of their payment providers.
    pub web_stores: Vec<WebStore>,
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

/// The built-in providers of an integrations file, read and checked.
pub struct ProviderFile {
    path: PathBuf,
    config: ProviderConfig,
}

impl ProviderFile {
    /// Reads `path` and checks that every configuration in it can work (a negative price, a
    /// tax rate above 1, ... refuse the whole file).
    pub fn read(path: &Path) -> Result<ProviderFile, IntegrationsError> {
        let malformed = |e: String| IntegrationsError::Malformed(path.to_path_buf(), e);
        let text =
            fs::read_to_string(path).map_err(|e| IntegrationsError::Read(path.to_path_buf(), e))?;
        let config: ProviderConfig =
            serde_json::from_str(&text).map_err(|e| malformed(e.to_string()))?;
        Integrations::new()
            .configure(&config)
            .map_err(|e| malformed(e.to_string()))?;
        Ok(ProviderFile {
            path: path.to_path_buf(),
            config,
        })
    }

    /// Maps each store of the file to its providers in `integrations`.
    pub fn apply(&self, integrations: &mut Integrations) -> Result<(), IntegrationsError> {
        integrations
            .configure(&self.config)
            .map_err(|e| IntegrationsError::Malformed(self.path.clone(), e.to_string()))?;
        Ok(())
    }
}

/// The integrations file a command uses, read and checked before any store is opened:
/// `--integrations` (`flag`) when given; else the `integrations.json` beside a SQLite database
/// (in a data directory, or in the folder of a `sqlite:` file) when there is one; else none.
pub fn provider_file(
    spec: &str,
    flag: Option<&Path>,
) -> Result<Option<ProviderFile>, IntegrationsError> {
    if let Some(path) = flag {
        return ProviderFile::read(path).map(Some);
    }
    let folder = if is_postgres(spec) {
        None
    } else {
        match spec.strip_prefix("sqlite:") {
            Some(path) => sqlite_path(path).parent().map(Path::to_path_buf),
            None => Some(PathBuf::from(spec)),
        }
    };
    match folder.map(|dir| dir.join(INTEGRATIONS_FILE)) {
        Some(file) if file.is_file() => ProviderFile::read(&file).map(Some),
        _ => Ok(None),
    }
}

impl Opened {
    /// The engine's integrations: the stock tables, and the built-in providers of `file`.
    pub fn integrations(
        &self,
        file: Option<&ProviderFile>,
    ) -> Result<Integrations, IntegrationsError> {
        let mut integrations = Integrations::with_stock_tables(&self.stock);
        if let Some(file) = file {
            file.apply(&mut integrations)?;
        }
        Ok(integrations)
    }

    /// Refuses `template` when one of its custom steps runs a provider that a WebStore of the
    /// database does not register in `integrations`: the message names the step, the
    /// provider and the store. Checked before anything runs (the command exits 2).
    pub fn check_template(
        &self,
        integrations: &Integrations,
        template: &Template,
    ) -> Result<(), String> {
        integrations
            .check_template(template, self.web_stores.iter().map(|store| store.id))
            .map_err(|e| format!("template {:?}: {e}", template.name))
    }
}

/// Warns on stderr about each WebStore that lacks a provider a step of the engine's template
/// needs (pricing, payment), saying what that means for its orders. `command` names the
/// command in the message.
pub fn warn_missing_providers(command: &str, engine: &Engine) {
    let missing = match engine.check_providers() {
        Ok(missing) => missing,
        Err(e) => {
            errln!("cartflow {command}: cannot check the WebStores' providers: {e}");
            return;
        }
    };
    for m in missing {
        // The message's word, and the key the integrations file names the kind by.
        let (kind, key) = match m.kind {
            ProviderKind::Payment => ("payment", "Payment"),
            _ => ("price", "Price"),
        };
        errln!(
            "cartflow {command}: WebStore {} ({}) has no {kind} provider mapped: {} (give \
             --integrations FILE with a \"{key}\" provider for it; docs/data-format.md)",
            m.store,
            m.store_name,
            m.consequence()
        );
    }
}

/// Whether `spec` is a PostgreSQL URL.
pub fn is_postgres(spec: &str) -> bool {
    spec.starts_with("postgres://") || spec.starts_with("postgresql://")
}

/// The file a `sqlite:` location names: `sqlite:///abs/path` and `sqlite://rel/path` are
/// spelled as URLs usually are.
pub fn sqlite_path(rest: &str) -> &Path {
    Path::new(rest.strip_prefix("//").unwrap_or(rest))
}

/// Opens the store that `spec` (the `--data` value) names; see the module documentation.
pub fn open_store(spec: &str) -> Result<Opened, DataError> {
    if is_postgres(spec) {
        let location = redact_password(spec);
        let database = |e| DataError::Database(location.clone(), e);
        let store = PostgresStore::connect(spec).map_err(database)?;
        let stock = store.stock().map_err(database)?;
        let web_stores = store.web_stores().map_err(database)?;
        return Ok(Opened {
            store: Arc::new(store),
            stock,
            location,
            web_stores,
        });
    }
    let store = match spec.strip_prefix("sqlite:") {
        Some(path) => {
            let path = sqlite_path(path);
            if !path.is_file() {
                return Err(DataError::NoDatabase(path.to_path_buf()));
            }
            open_sqlite(path)?
        }
        None => open_directory(Path::new(spec))?,
    };
    let location = store.path().display().to_string();
    let database = |e| DataError::Database(location.clone(), e);
    let stock = store.stock().map_err(database)?;
    let web_stores = store.web_stores().map_err(database)?;
    Ok(Opened {
        store: Arc::new(store),
        stock,
        location,
        web_stores,
    })
}

/// A database URL fit for messages: `postgres://user:secret@host/db` -> `postgres://user:***@host/db`.
pub fn redact_password(url: &str) -> String {
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

/// Opens (creating if needed) the SQLite database at `path`.
pub fn open_sqlite(path: &Path) -> Result<SqliteStore, DataError> {
    SqliteStore::open(path, Durability::Normal)
        .map_err(|e| DataError::Database(path.display().to_string(), e))
}

/// Opens `<dir>/cartflow.db`, importing `<dir>/cartflow.json` when the database is new or
/// empty. The seed is read and checked before the database is touched, so a bad seed
/// creates nothing.
fn open_directory(dir: &Path) -> Result<SqliteStore, DataError> {
    check_directory(dir)?;
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
        Err(StoreError::Conflict(_)) if !store.is_empty().map_err(database)? => Ok(store),
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

/// Checks that `dir` is a directory; a file gets a hint at what was probably meant.
pub fn check_directory(dir: &Path) -> Result<(), DataError> {
    if dir.is_dir() {
        return Ok(());
    }
    if !dir.is_file() {
        return Err(DataError::NoDirectory(dir.to_path_buf()));
    }
    let folder = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let hint = if dir.file_name().is_some_and(|name| name == DATA_FILE) {
        format!(
            "pass the directory that holds it: --data {}",
            folder.display()
        )
    } else if dir.extension().is_some_and(|e| e == "json") {
        format!(
            "a data directory is seeded from the {DATA_FILE} in it; to load this data set into \
             a database, run `cartflow import --data <DIR|sqlite:PATH|URL> --file {}`",
            dir.display()
        )
    } else {
        format!(
            "to open it as a SQLite database, write --data sqlite:{}",
            dir.display()
        )
    };
    Err(DataError::NotADirectory(dir.to_path_buf(), hint))
}

/// Reads and checks the seed of `dir`.
pub fn load(dir: &Path) -> Result<DataSet, DataError> {
    load_file(&dir.join(DATA_FILE))
}

/// Reads and checks a data set file: valid JSON of the data-set shape, consistent records,
/// no SKU stocked twice by one store, and at least one store.
pub fn load_file(path: &Path) -> Result<DataSet, DataError> {
    let path = path.to_path_buf();
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use cartflow::integrations::{IntegrationRequest, Verdict};
    use cartflow::machine::{CustomAction, Step};
    use cartflow::model::SessionState;
    use cartflow::{MemoryStore, sample};

    use super::*;

    fn opened() -> Opened {
        let data = sample::dataset();
        Opened {
            stock: data.stock.clone(),
            web_stores: data.stores.clone(),
            store: Arc::new(MemoryStore::from_dataset(data).unwrap()),
            location: "memory".into(),
        }
    }

    fn credit_check() -> Template {
        let mut template = Template::standard();
        let step = Step::custom(
            SessionState::new("Credit Check").unwrap(),
            CustomAction::new("CreditCheck").unwrap(),
            "CheckCredit",
            "credit-limit",
        );
        assert!(template.insert_step(SessionState::Taxes, step));
        template
    }

    #[test]
    fn a_template_whose_custom_provider_a_store_lacks_is_refused_naming_all_three() {
        let opened = opened();
        let mut integrations = opened.integrations(None).unwrap();
        assert_eq!(
            opened.check_template(&integrations, &Template::standard()),
            Ok(())
        );
        let refused = opened
            .check_template(&integrations, &credit_check())
            .unwrap_err();
        let first_store = opened.web_stores[0].id.to_string();
        for part in ["\"Credit Check\"", "\"credit-limit\"", first_store.as_str()] {
            assert!(refused.contains(part), "{refused}");
        }
        // Registered for every store of the database, the template is accepted.
        for store in &opened.web_stores {
            integrations.set_custom(
                store.id,
                "credit-limit",
                Arc::new(|_: &IntegrationRequest| Ok(Verdict::Passed)),
            );
        }
        assert_eq!(
            opened.check_template(&integrations, &credit_check()),
            Ok(())
        );
    }
}
