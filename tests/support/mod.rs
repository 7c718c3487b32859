//! Test harness: a fresh PostgreSQL database for each caller.
//!
//! With `CARTFLOW_TEST_DATABASE_URL` set, databases are created on that server. Otherwise,
//! when `initdb` and `pg_ctl` are found (on `PATH` or under `/usr/lib/postgresql/*/bin`), one
//! throw-away cluster is started per test process: data directory and unix socket in a
//! temporary directory, no TCP listener (so no port can collide), fsync off (on after
//! [`start_with_fsync`], for benchmarks of durable commits). It is stopped
//! when the process ends, however it ends: a watchdog process waits for the end of a pipe
//! this process holds open, then runs `pg_ctl stop -m immediate` and removes the directory;
//! on a normal exit an `atexit` hook closes the pipe and waits for the watchdog, so no
//! PostgreSQL process outlives the test run. As root, `initdb` and `pg_ctl` run as the
//! `postgres` user (initdb refuses root). Otherwise the PostgreSQL tests are skipped, each
//! run saying so on stderr, or fail when `CARTFLOW_REQUIRE_POSTGRES=1` (as `.ci/run` sets it):
//! where the store must be tested, a missing server never passes for a tested one.
//!
//! Also the stores every test may run against and a way to wrap one ([`stores`]), and
//! helpers for tests that run the binary as a server ([`server`]).

// Each test file that includes this module uses only part of it.
#![allow(dead_code)]

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, Once, OnceLock};
use std::time::Instant;

use postgres::{Client, NoTls};

pub mod checkout_http;
pub mod data;
pub mod queue;
pub mod server;
pub mod stores;

/// The variable naming a server to use instead of a throw-away cluster.
pub const DATABASE_URL_VAR: &str = "CARTFLOW_TEST_DATABASE_URL";

/// The variable that, set to `1`, makes the PostgreSQL tests fail when no server can be had
/// (otherwise they are skipped, saying so).
pub const REQUIRE_VAR: &str = "CARTFLOW_REQUIRE_POSTGRES";

/// Whether the environment lets the PostgreSQL tests be skipped.
fn skip_allowed() -> bool {
    !std::env::var(REQUIRE_VAR).is_ok_and(|v| v.trim() == "1")
}

/// A database that exists for the life of this value, dropped (with its connections) after.
pub struct TestDb {
    name: String,
    url: String,
}

impl TestDb {
    /// The connection string of the database.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The database as a `postgresql://` URL, the form `cartflow --data` takes (the harness
    /// may hold a `key=value` connection string).
    pub fn cli_url(&self) -> String {
        if self.url.contains("://") {
            return self.url.clone();
        }
        let field = |key: &str| {
            self.url
                .split_whitespace()
                .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
                .unwrap_or_default()
                .to_owned()
        };
        format!(
            "postgresql:///{}?host={}&port={}&user={}",
            field("dbname"),
            field("host"),
            field("port"),
            field("user")
        )
    }

    /// A client connected to the database, for inspecting or tampering with it directly.
    pub fn client(&self) -> Client {
        Client::connect(&self.url, NoTls).expect("connecting to the test database")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(Ok(Some(server))) = SERVER.get() {
            // FORCE ends the connections stores still hold.
            let sql = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name);
            if let Err(e) = server
                .admin()
                .and_then(|mut c| c.batch_execute(&sql).map_err(fmt))
            {
                let _ = writeln!(
                    std::io::stderr(),
                    "could not drop test database {}: {e}",
                    self.name
                );
            }
        }
    }
}

/// A fresh, empty database, or `None` (after one line saying so) when no PostgreSQL can be
/// had and [`REQUIRE_VAR`] does not require it. Panics when it is required and cannot be had,
/// and when PostgreSQL is there but fails to start: that is a broken setup, not a reason to
/// skip.
pub fn postgres() -> Option<TestDb> {
    let server = server()?;
    let name = format!("cartflow_test_{}", uuid::Uuid::new_v4().simple());
    server
        .admin()
        .and_then(|mut c| {
            c.batch_execute(&format!("CREATE DATABASE \"{name}\""))
                .map_err(fmt)
        })
        .unwrap_or_else(|e| panic!("creating test database {name}: {e}"));
    Some(TestDb {
        url: server.url_for(&name),
        name,
    })
}

/// Whether this process's cluster is to start with fsync on; see [`start_with_fsync`].
static FSYNC: AtomicBool = AtomicBool::new(false);

/// Makes this process's throw-away cluster durable when it starts: `fsync`,
/// `synchronous_commit` and `full_page_writes` on, as a production server commits. For
/// benchmarks; the tests keep the faster default. Must come before the first database is
/// asked for: false when the cluster already runs (with fsync off). A server named by
/// [`DATABASE_URL_VAR`] keeps its own settings.
pub fn start_with_fsync() -> bool {
    FSYNC.store(true, Ordering::SeqCst);
    SERVER.get().is_none()
}

/// Whether [`postgres`] will give databases (prints the skip line once when not; panics
/// like it when skipping is not allowed).
pub fn postgres_available() -> bool {
    server().is_some()
}

fn fmt(e: impl std::fmt::Display) -> String {
    e.to_string()
}

enum Server {
    /// A server someone else runs, named by [`DATABASE_URL_VAR`].
    External { url: String },
    /// This process's own cluster, listening on a unix socket in `dir`.
    Cluster { dir: PathBuf },
}

/// The cluster's socket is `.s.PGSQL.<port>` in its private directory: any number will do.
const CLUSTER_PORT: u16 = 5432;

impl Server {
    fn admin(&self) -> Result<Client, String> {
        let url = match self {
            Server::External { url } => url.clone(),
            Server::Cluster { .. } => self.url_for("postgres"),
        };
        Client::connect(&url, NoTls).map_err(fmt)
    }

    fn url_for(&self, database: &str) -> String {
        match self {
            Server::External { url } => with_database(url, database),
            Server::Cluster { dir } => format!(
                "host={} port={CLUSTER_PORT} user=postgres dbname={database}",
                dir.display()
            ),
        }
    }
}

/// `url` with its database replaced: the path of a URL, or a trailing `dbname=` (the last
/// one wins) for `key=value` strings.
fn with_database(url: &str, database: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return format!("{url} dbname={database}");
    };
    let (scheme, rest) = url.split_at(scheme_end + 3);
    let (main, query) = match rest.split_once('?') {
        Some((main, query)) => (main, format!("?{query}")),
        None => (rest, String::new()),
    };
    let authority = main
        .split_once('/')
        .map_or(main, |(authority, _)| authority);
    format!("{scheme}{authority}/{database}{query}")
}

static SERVER: OnceLock<Result<Option<Server>, String>> = OnceLock::new();

fn server() -> Option<&'static Server> {
    let server = SERVER.get_or_init(|| match std::env::var(DATABASE_URL_VAR) {
        Ok(url) if !url.trim().is_empty() => Ok(Some(Server::External { url })),
        _ => match find_binaries() {
            Some(bin) => start_cluster(&bin).map(Some),
            None => Ok(None),
        },
    });
    match server {
        Ok(Some(server)) => Some(server),
        Ok(None) if !skip_allowed() => panic!(
            "{REQUIRE_VAR}=1 and no PostgreSQL for the PostgreSQL tests: install initdb and \
             pg_ctl, or set {DATABASE_URL_VAR}"
        ),
        Ok(None) => {
            static SKIPPED: Once = Once::new();
            // Straight to stderr, past the test harness's capture: the line must be seen.
            SKIPPED.call_once(|| {
                let _ = writeln!(
                    std::io::stderr(),
                    "PostgreSQL tests skipped: no initdb/pg_ctl found and {DATABASE_URL_VAR} unset \
                     (set {REQUIRE_VAR}=1 to fail instead)"
                );
            });
            None
        }
        Err(e) => panic!("the PostgreSQL test cluster did not start: {e}"),
    }
}

/// The directory holding `initdb` and `pg_ctl`: `PATH` first, then Debian's versioned
/// directories, newest first. Symlinks are resolved so `pg_ctl` finds its `postgres`.
fn find_binaries() -> Option<PathBuf> {
    let has_both = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .find(|dir| has_both(dir))
        .and_then(|dir| std::fs::canonicalize(dir.join("initdb")).ok())
        .and_then(|initdb| initdb.parent().map(Path::to_path_buf))
        .filter(|dir| has_both(dir));
    on_path.or_else(|| {
        let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|entry| {
                let entry = entry.ok()?;
                let version = entry.file_name().to_str()?.parse().ok()?;
                Some((version, entry.path().join("bin")))
            })
            .filter(|(_, bin)| has_both(bin))
            .collect();
        versions.sort();
        versions.pop().map(|(_, bin)| bin)
    })
}

unsafe extern "C" {
    safe fn geteuid() -> u32;
    safe fn atexit(hook: extern "C" fn()) -> i32;
}

/// A command for a PostgreSQL binary, run as `postgres` when this process is root.
fn pg_command(program: &Path, as_postgres: bool) -> Command {
    if as_postgres {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

fn run(command: &mut Command, what: &str) -> Result<(), String> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{what}: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what} failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// The watchdog that stops the cluster; taken by [`stop_cluster`] at exit.
static WATCHDOG: Mutex<Option<Child>> = Mutex::new(None);

/// Runs at a normal exit: closing the watchdog's stdin tells it to stop the cluster, and
/// waiting for it means the cluster is gone before the process is.
extern "C" fn stop_cluster() {
    let Ok(mut slot) = WATCHDOG.try_lock() else {
        return;
    };
    if let Some(mut child) = slot.take() {
        drop(child.stdin.take());
        let _ = child.wait();
    }
}

fn start_cluster(bin: &Path) -> Result<Server, String> {
    let started = Instant::now();
    let as_postgres = geteuid() == 0;
    let dir = tempfile::Builder::new()
        .prefix("cartflow-pg-")
        .tempdir()
        .map_err(fmt)?
        .keep();
    if as_postgres {
        run(
            Command::new("chown").arg("postgres").arg(&dir),
            "chown postgres",
        )?;
    }
    let data = dir.join("data");
    init_cluster(bin, &dir, &data, as_postgres).inspect_err(|_| {
        let _ = std::fs::remove_dir_all(&dir);
    })?;

    // The watchdog exists before the server does, so no exit path can leave a server behind.
    let mut stop = pg_command(&bin.join("pg_ctl"), as_postgres);
    stop.arg("-D").arg(&data).args(["stop", "-m", "immediate"]);
    let watchdog = Command::new("sh")
        .arg("-c")
        .arg(r#"cat >/dev/null; dir=$1; shift; "$@" >/dev/null 2>&1; rm -rf "$dir""#)
        .arg("cartflow-pg-watchdog")
        .arg(&dir)
        .arg(stop.get_program())
        .args(stop.get_args())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Its own process group: a Ctrl-C meant for the tests does not kill it first.
        .process_group(0)
        .spawn()
        .map_err(|e| format!("starting the watchdog: {e}"))?;
    *WATCHDOG.lock().unwrap_or_else(|e| e.into_inner()) = Some(watchdog);
    if atexit(stop_cluster) != 0 {
        return Err("atexit refused the cluster's stop hook".into());
    }

    run(
        pg_command(&bin.join("pg_ctl"), as_postgres)
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(dir.join("server.log"))
            .args(["-w", "-t", "60", "start"]),
        "pg_ctl start",
    )?;
    let _ = writeln!(
        std::io::stderr(),
        "PostgreSQL test cluster ({}) ready in {} ms",
        bin.display(),
        started.elapsed().as_millis()
    );
    Ok(Server::Cluster { dir })
}

/// Creates the cluster's data directory and writes its settings.
fn init_cluster(bin: &Path, dir: &Path, data: &Path, as_postgres: bool) -> Result<(), String> {
    run(
        pg_command(&bin.join("initdb"), as_postgres)
            .arg("-D")
            .arg(data)
            .args(["-U", "postgres", "--auth=trust", "--no-sync"])
            .args(["-E", "UTF8", "--locale=C"]),
        "initdb",
    )?;
    let durability = if FSYNC.load(Ordering::SeqCst) {
        "fsync = on\nsynchronous_commit = on\nfull_page_writes = on\n"
    } else {
        "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
    };
    let settings = format!(
        "\n# cartflow test cluster\nlisten_addresses = ''\nunix_socket_directories = '{}'\n\
         port = {CLUSTER_PORT}\nmax_connections = 300\nshared_buffers = 32MB\n{durability}",
        dir.display()
    );
    std::fs::OpenOptions::new()
        .append(true)
        .open(data.join("postgresql.conf"))
        .and_then(|mut conf| conf.write_all(settings.as_bytes()))
        .map_err(|e| format!("writing postgresql.conf: {e}"))?;
    Ok(())
}
