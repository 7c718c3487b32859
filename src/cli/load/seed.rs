//! The data directory a `cartflow load --data` run checks out: the sample world plus one
//! in-stock cart per checkout, the sample providers, and a token for the sample buyer. It is
//! an ordinary data directory, so `cartflow serve --data` can serve it to a later
//! `cartflow load --url` run.

use std::fs;
use std::io;
use std::path::Path;

use cartflow::model::SfId;
use cartflow::sample;
use cartflow::store::{Durability, SqliteStore};
use serde_json::json;

use crate::cli::datadir::{DATABASE_FILE, INTEGRATIONS_FILE};
use crate::cli::serve::TOKENS_FILE;

/// The sample buyer's token in the seeded `tokens.json`.
pub const TOKEN: &str = "load-buyer-token";

/// The cart number of the first load cart; the sample world's carts are numbered far below.
pub const FIRST_CART: u64 = 1_000_000;

/// Seeds `dir`, which must be new or empty, with `carts` in-stock carts of the sample buyer;
/// returns their Ids.
pub fn seed(dir: &Path, carts: usize) -> Result<Vec<SfId>, String> {
    refuse_existing_data(dir)?;
    fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut data = sample::dataset();
    let count = u64::try_from(carts).unwrap_or(u64::MAX);
    let ids = sample::add_in_stock_copies(&mut data, FIRST_CART, count);
    let db = dir.join(DATABASE_FILE);
    SqliteStore::open(&db, Durability::Normal)
        .and_then(|store| store.import(&data))
        .map_err(|e| format!("cannot seed {}: {e}", db.display()))?;
    let providers = serde_json::to_string_pretty(&sample::provider_config())
        .map_err(|e| format!("cannot write the sample providers: {e}"))?;
    let tokens = json!({ TOKEN: sample::buyer_id().to_string() }).to_string();
    write(&dir.join(INTEGRATIONS_FILE), &providers)?;
    write(&dir.join(TOKENS_FILE), &tokens)?;
    Ok(ids)
}

/// A load run writes hundreds of carts and orders: never into data that is already there.
fn refuse_existing_data(dir: &Path) -> Result<(), String> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("cannot read {}: {e}", dir.display())),
    };
    if entries.count() == 0 {
        Ok(())
    } else {
        Err(format!(
            "{} is not empty: cartflow load --data seeds a new data directory and never writes \
             into existing data (give a new or empty directory)",
            dir.display()
        ))
    }
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}
