//! `cartflow load`: concurrent buyers walking whole checkouts through the REST facade, against
//! a running server (`--url`) or one this command starts over a new data directory (`--data`),
//! then a summary: checkouts per second, latency percentiles per call and per checkout,
//! failures by error code. Bounded by the number of checkouts and by time; a host that is not
//! loopback is refused unless `--allow-remote` is given.

pub mod buyer;
pub mod report;
pub mod seed;

use std::net::ToSocketAddrs as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use cartflow::Engine;
use cartflow::http::{Server, ServerConfig, Tokens};
use cartflow::ids::RandomIds;
use cartflow::machine::TransitionTable;
use cartflow::sample;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;

use crate::cli::{datadir, print_stdout, template};
use buyer::{Checkout, Client};
use report::Summary;

/// Exit status for a usage or setup error.
const USAGE: u8 = 2;

/// Exit status when the run finished but some checkouts failed or were not started.
const INCOMPLETE: u8 = 1;

/// What to load.
#[derive(Debug, Clone)]
pub enum Target {
    /// Seed this new data directory and serve it in-process on a loopback port.
    Data(PathBuf),
    /// A running server: `http://host:port`.
    Url(String),
}

/// A load run, as the command line gave it.
#[derive(Debug, Clone)]
pub struct Request {
    /// What to load.
    pub target: Target,
    /// How many checkouts (one cart each).
    pub checkouts: usize,
    /// Buyers at once.
    pub concurrency: usize,
    /// No checkout starts after this long.
    pub max_duration: Duration,
    /// The bearer token (`--url`; a seeded directory has its own).
    pub token: Option<String>,
    /// Worker threads of the in-process server (`--data`).
    pub workers: usize,
    /// Print the summary as JSON.
    pub json: bool,
    /// Accept a host that is not loopback.
    pub allow_remote: bool,
    /// Seed the directory and stop (`--data`).
    pub seed_only: bool,
}

/// Runs `request`; exit status 0 when every checkout completed, 1 when some failed or were
/// not started, 2 when the run could not start.
pub fn run(request: &Request) -> ExitCode {
    match execute(request) {
        Ok(None) => ExitCode::SUCCESS,
        Ok(Some(summary)) => {
            let text = if request.json {
                serde_json::to_string_pretty(&summary).unwrap_or_default() + "\n"
            } else {
                summary.text()
            };
            let printed = print_stdout(&text);
            if summary.failed + summary.not_started > 0 {
                ExitCode::from(INCOMPLETE)
            } else {
                printed
            }
        }
        Err(message) => {
            errln!("cartflow load: {message}");
            ExitCode::from(USAGE)
        }
    }
}

fn execute(request: &Request) -> Result<Option<Summary>, String> {
    match &request.target {
        Target::Data(dir) => {
            let carts = seed::seed(dir, request.checkouts)?;
            if request.seed_only {
                errln!(
                    "cartflow load: seeded {} with {} carts; serve it with `cartflow serve \
                     --data {}` and load it with `--url ... --token {}`",
                    dir.display(),
                    carts.len(),
                    dir.display(),
                    seed::TOKEN
                );
                return Ok(None);
            }
            let server = serve(dir, request.workers)?;
            let root = format!("http://{}", server.local_addr());
            let carts: Vec<String> = carts.iter().map(ToString::to_string).collect();
            let summary = connect(&root, seed::TOKEN).map(|client| drive(&client, &carts, request));
            server.shutdown();
            summary.map(Some)
        }
        Target::Url(url) => {
            let root = checked_root(url, request.allow_remote)?;
            let token = request.token.as_deref().ok_or(
                "--url needs --token: the bearer token of a buyer whose Active carts are to be \
                 checked out",
            )?;
            let client = connect(&root, token)?;
            let carts = active_carts(&client, request.checkouts)?;
            Ok(Some(drive(&client, &carts, request)))
        }
    }
}

/// Serves the seeded `dir` on a free loopback port, as `cartflow serve` would.
fn serve(dir: &Path, workers: usize) -> Result<Server, String> {
    let spec = dir.display().to_string();
    let providers = datadir::provider_file(&spec, None).map_err(|e| e.to_string())?;
    let table = template::table(Some(&spec), None).map_err(|e| e.to_string())?;
    let opened = datadir::open_store(&spec).map_err(|e| e.to_string())?;
    let integrations = opened
        .integrations(providers.as_ref())
        .map_err(|e| e.to_string())?;
    let engine = Engine::new(opened.store)
        .with_table(table)
        .with_ids(Arc::new(RandomIds))
        .with_integrations(integrations);
    datadir::warn_missing_providers("load", &engine);
    let tokens = Tokens::new().with(seed::TOKEN, sample::buyer_id());
    let config = ServerConfig {
        addr: ([127, 0, 0, 1], 0).into(),
        workers,
        drain_delay: Duration::ZERO,
        ..ServerConfig::default()
    };
    Server::start(engine, tokens, &config).map_err(|e| format!("cannot start the server: {e}"))
}

/// `url` as `http://host:port`, once its host is known to be loopback (or remote is allowed).
fn checked_root(url: &str, allow_remote: bool) -> Result<String, String> {
    let authority = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url:?}: give an http:// URL (cartflow load speaks plain HTTP)"))?
        .trim_end_matches('/');
    if authority.is_empty() || authority.contains('/') {
        return Err(format!(
            "{url:?}: give the server's root, http://host:port, without a path"
        ));
    }
    let with_port = if authority.ends_with(']') || !authority.contains(':') {
        format!("{authority}:80")
    } else {
        authority.to_owned()
    };
    let addresses: Vec<_> = with_port
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {authority}: {e}"))?
        .collect();
    let remote = addresses.is_empty() || addresses.iter().any(|a| !a.ip().is_loopback());
    if remote && !allow_remote {
        return Err(format!(
            "{authority} is not a loopback address: a load run is refused anywhere else unless \
             --allow-remote is given"
        ));
    }
    Ok(format!("http://{authority}"))
}

/// A client of the newest API version the server at `root` lists.
fn connect(root: &str, token: &str) -> Result<Client, String> {
    let unversioned = Client::new(root.to_owned(), String::new(), token);
    let versions = unversioned
        .get("/services/data/")
        .map_err(|failure| format!("{root} did not list its API versions: {}", failure.code))?;
    let latest = versions
        .as_array()
        .and_then(|listed| listed.last())
        .and_then(|version| version["url"].as_str())
        .ok_or_else(|| format!("{root} listed no API version"))?;
    Ok(Client::new(root.to_owned(), latest.to_owned(), token))
}

/// Up to `wanted` Active carts the token's user can read, in Id order.
fn active_carts(client: &Client, wanted: usize) -> Result<Vec<String>, String> {
    let query =
        format!("SELECT Id FROM WebCart WHERE Status = 'Active' ORDER BY Id LIMIT {wanted}");
    let encoded = percent_encoding::utf8_percent_encode(&query, percent_encoding::NON_ALPHANUMERIC);
    let mut page = client
        .get(&format!("{}/query?q={encoded}", client.api()))
        .map_err(|f| format!("the query for Active carts failed: {}", f.code))?;
    let mut carts = Vec::new();
    loop {
        carts.extend(ids_of(&page));
        let Some(next) = page["nextRecordsUrl"].as_str().map(str::to_owned) else {
            break;
        };
        page = client
            .get(&next)
            .map_err(|f| format!("the query for Active carts failed: {}", f.code))?;
    }
    if carts.is_empty() {
        return Err("the token's user can read no Active cart: nothing to check out".into());
    }
    if carts.len() < wanted {
        errln!(
            "cartflow load: only {} Active carts (of {wanted} asked for): checking out those",
            carts.len()
        );
    }
    Ok(carts)
}

fn ids_of(page: &Value) -> impl Iterator<Item = String> + '_ {
    page["records"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|record| record["Id"].as_str().map(str::to_owned))
}

/// Runs `carts`' checkouts with `request.concurrency` buyers, each taking the next cart until
/// none is left or the time bound has passed.
fn drive(client: &Client, carts: &[String], request: &Request) -> Summary {
    let next = AtomicUsize::new(0);
    let deadline = Instant::now() + request.max_duration;
    let bar = progress(carts.len());
    // The standard template: the one a seeded directory has, and the sequence a Salesforce
    // client of a standard store follows.
    let table = TransitionTable::standard();
    let template = table.template();
    let started = Instant::now();
    let checkouts: Vec<Checkout> = thread::scope(|scope| {
        let buyers: Vec<_> = (0..request.concurrency)
            .map(|_| {
                // One agent (one connection) per buyer, as separate clients would have.
                let client = client.with_own_connection();
                let (next, bar) = (&next, &bar);
                scope.spawn(move || {
                    let mut done = Vec::new();
                    while Instant::now() < deadline {
                        let Some(cart) = carts.get(next.fetch_add(1, Ordering::Relaxed)) else {
                            break;
                        };
                        done.push(buyer::checkout(&client, template, cart));
                        bar.inc(1);
                    }
                    done
                })
            })
            .collect();
        buyers
            .into_iter()
            .flat_map(|buyer| buyer.join().unwrap_or_default())
            .collect()
    });
    bar.finish_and_clear();
    Summary::of(
        &checkouts,
        carts.len(),
        request.concurrency,
        started.elapsed(),
    )
}

/// A bar on stderr, drawn only when stderr is a terminal.
fn progress(total: usize) -> ProgressBar {
    let bar = ProgressBar::new(u64::try_from(total).unwrap_or(u64::MAX));
    let style = ProgressStyle::with_template(
        "{bar:40} {pos}/{len} checkouts, {per_sec}, {elapsed} (eta {eta})",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_hosts_are_loaded_unless_remote_is_allowed() {
        assert_eq!(
            checked_root("http://127.0.0.1:8080/", false).as_deref(),
            Ok("http://127.0.0.1:8080")
        );
        assert_eq!(
            checked_root("http://[::1]:9000", false).as_deref(),
            Ok("http://[::1]:9000")
        );
        let refused = checked_root("http://192.0.2.7:8080", false).unwrap_err();
        assert!(refused.contains("--allow-remote"), "{refused}");
        assert_eq!(
            checked_root("http://192.0.2.7:8080", true).as_deref(),
            Ok("http://192.0.2.7:8080")
        );
        for bad in [
            "https://127.0.0.1:8080",
            "127.0.0.1:8080",
            "http://127.0.0.1:8080/x",
        ] {
            assert!(checked_root(bad, true).is_err(), "{bad}");
        }
    }
}
