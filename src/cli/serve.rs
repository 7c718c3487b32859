//! `cartflow serve`: the Salesforce-shaped HTTP facade over a data directory or database,
//! with workers in-process unless told otherwise. SIGTERM or SIGINT stops it gracefully.

use std::net::{SocketAddr, ToSocketAddrs as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use cartflow::http::{Server, ServerConfig, Tokens};
use cartflow::ids::RandomIds;
use cartflow::{Engine, MemoryStore};

use crate::cli::{datadir, deliver, template};

/// The token file a data directory holds.
pub const TOKENS_FILE: &str = "tokens.json";

/// How to serve, as the command line gave it.
#[derive(Debug, Clone)]
pub struct Request {
    /// The data directory or database URL (see [`datadir::open_store`]).
    pub data: String,
    /// Where to listen: `HOST:PORT`, the host an IP address or a name to resolve.
    pub addr: String,
    /// The token file; `<dir>/tokens.json` for a data directory when absent.
    pub tokens: Option<PathBuf>,
    /// Worker threads in this process (0: none).
    pub workers: usize,
    /// The integrations file (`--integrations`); see [`datadir::provider_file`].
    pub integrations: Option<PathBuf>,
    /// The template file (`--template`); see [`template::table`].
    pub template: Option<PathBuf>,
    /// The listener's timeouts and connection cap.
    pub limits: Limits,
    /// The webhooks file (`--webhooks`) whose hooks are delivered beside the server.
    pub webhooks: Option<PathBuf>,
}

/// The listener's timeouts and connection cap (`cartflow serve` flags; defaults from
/// [`ServerConfig::default`]).
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct Limits {
    /// How long a client has to send a request's headers, from its connection's accept and
    /// from the end of each answer (so also how long a keep-alive connection may idle).
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..),
          default_value_t = millis(ServerConfig::default().header_timeout))]
    pub header_timeout_ms: u64,
    /// How long a request's body may take to arrive (then 408 and the connection closes).
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..),
          default_value_t = millis(ServerConfig::default().body_timeout))]
    pub body_timeout_ms: u64,
    /// How long a request may take to be answered (then 503 REQUEST_RUNNING_TOO_LONG).
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..),
          default_value_t = millis(ServerConfig::default().request_timeout))]
    pub request_timeout_ms: u64,
    /// The most connections open at once; at the cap the longest-idle one makes room. Keep
    /// it well under the process's descriptor limit (`ulimit -n`).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..),
          default_value_t = ServerConfig::default().max_connections as u64)]
    pub max_connections: u64,
    /// On SIGTERM, keep serving this long with /readyz answering 503 before closing the
    /// listener (time for a load balancer to notice).
    #[arg(long, value_name = "MS", default_value_t = millis(ServerConfig::default().drain_delay))]
    pub drain_delay_ms: u64,
}

fn millis(duration: Duration) -> u64 {
    duration.as_millis().try_into().unwrap_or(u64::MAX)
}

impl Limits {
    /// `config` with these limits.
    fn apply(&self, config: ServerConfig) -> ServerConfig {
        ServerConfig {
            header_timeout: Duration::from_millis(self.header_timeout_ms),
            body_timeout: Duration::from_millis(self.body_timeout_ms),
            request_timeout: Duration::from_millis(self.request_timeout_ms),
            max_connections: usize::try_from(self.max_connections).unwrap_or(usize::MAX),
            drain_delay: Duration::from_millis(self.drain_delay_ms),
            ..config
        }
    }
}

/// Exit status for a usage or data error.
const USAGE: u8 = 2;

/// Serves until stopped; exit status 0 after a clean stop.
pub fn run(request: &Request) -> ExitCode {
    match serve(request) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            errln!("cartflow serve: {message}");
            ExitCode::from(USAGE)
        }
    }
}

fn serve(request: &Request) -> Result<(), String> {
    let directory = Path::new(&request.data);
    let is_url = ["sqlite:", "postgres://", "postgresql://"]
        .iter()
        .any(|scheme| request.data.starts_with(scheme));
    let is_directory = !is_url && directory.is_dir();
    let tokens = tokens(request, is_directory.then_some(directory))?;
    let providers = datadir::provider_file(&request.data, request.integrations.as_deref())
        .map_err(|e| e.to_string())?;
    let table = template::table(Some(&request.data), request.template.as_deref())
        .map_err(|e| e.to_string())?;
    let hooks = request.webhooks.as_deref().map(deliver::load).transpose()?;
    let opened = open(&request.data, is_directory)?;
    let integrations = opened
        .integrations(providers.as_ref())
        .map_err(|e| e.to_string())?;
    opened.check_template(&integrations, table.template())?;
    let location = opened.location;
    let store = Arc::clone(&opened.store);
    let engine = Engine::new(opened.store)
        .with_table(table)
        .with_ids(Arc::new(RandomIds))
        .with_integrations(integrations);
    datadir::warn_missing_providers("serve", &engine);
    let candidates = resolve(&request.addr)?;
    let config = request.limits.apply(ServerConfig {
        workers: request.workers,
        ..ServerConfig::default()
    });
    let server = start_on_first(&candidates, engine, tokens, &config)
        .map_err(|e| format!("cannot listen on {}: {e}", request.addr))?;
    let delivery = hooks
        .map(|hooks| deliver::start_beside("serve", &store, &hooks))
        .transpose()?;

    let stopped = super::stop_channel()?;

    errln!(
        "cartflow serve: listening on http://{} ({location}), {} worker thread(s); stop with \
         SIGTERM or Ctrl-C",
        server.local_addr(),
        request.workers
    );
    // The sender lives in the handler for the life of the process, so this waits for a signal.
    let _ = stopped.recv();
    errln!("cartflow serve: stopping after the requests and operations in hand");
    server.shutdown();
    if let Some(delivery) = delivery {
        delivery.stop();
    }
    errln!("cartflow serve: stopped");
    Ok(())
}

/// The addresses `HOST:PORT` names, in the resolver's order; an error when it names none.
fn resolve(addr: &str) -> Result<Vec<SocketAddr>, String> {
    let resolved = addr.to_socket_addrs().map_err(|e| {
        format!("--addr {addr}: cannot resolve it ({e}); expected HOST:PORT, e.g. 127.0.0.1:8080")
    })?;
    let candidates: Vec<SocketAddr> = resolved.collect();
    if candidates.is_empty() {
        return Err(format!("--addr {addr}: the host resolves to no address"));
    }
    Ok(candidates)
}

/// Starts the server on the first of `candidates` that binds (`localhost` may name an IPv6
/// address the machine does not have, then its IPv4 one); the last bind error when none does.
fn start_on_first(
    candidates: &[SocketAddr],
    engine: Engine,
    tokens: Tokens,
    config: &ServerConfig,
) -> std::io::Result<Server> {
    let mut last_error = None;
    for &addr in candidates {
        let config = ServerConfig {
            addr,
            ..config.clone()
        };
        match Server::start(engine.clone(), tokens.clone(), &config) {
            Ok(server) => return Ok(server),
            Err(e) => last_error = Some(e),
        }
    }
    Err(last_error.unwrap_or_else(|| std::io::Error::other("no address to listen on")))
}

/// The tokens to accept: `--tokens`, else a data directory's `tokens.json`, else none (every
/// call that needs a token answers 401).
fn tokens(request: &Request, directory: Option<&Path>) -> Result<Tokens, String> {
    if let Some(file) = &request.tokens {
        return load_tokens(file);
    }
    match directory.map(|dir| dir.join(TOKENS_FILE)) {
        Some(file) if file.exists() => load_tokens(&file),
        Some(file) => {
            errln!(
                "cartflow serve: no {} (pass --tokens): every call but GET /services/data/ \
                 answers 401",
                file.display()
            );
            Ok(Tokens::new())
        }
        None => {
            errln!(
                "cartflow serve: no --tokens file: every call but GET /services/data/ answers 401"
            );
            Ok(Tokens::new())
        }
    }
}

fn load_tokens(file: &Path) -> Result<Tokens, String> {
    let tokens = Tokens::load(file).map_err(|e| format!("{}: {e}", file.display()))?;
    if tokens.is_empty() {
        errln!(
            "cartflow serve: {} accepts no token: every call but GET /services/data/ answers 401",
            file.display()
        );
    }
    Ok(tokens)
}

/// Opens the data. A directory holding neither a database nor a seed is served as an empty
/// in-memory store (nothing is written to it): there is nothing to check out until a
/// `cartflow.json` is put there and the server restarted.
fn open(data: &str, is_directory: bool) -> Result<datadir::Opened, String> {
    let directory = Path::new(data);
    if is_directory
        && !directory.join(datadir::DATABASE_FILE).exists()
        && !directory.join(datadir::DATA_FILE).exists()
    {
        errln!(
            "cartflow serve: {} holds neither {} nor {}: serving an empty store; nothing is \
             written",
            directory.display(),
            datadir::DATABASE_FILE,
            datadir::DATA_FILE
        );
        return Ok(datadir::Opened {
            store: Arc::new(MemoryStore::new()),
            stock: Vec::new(),
            location: "an empty in-memory store".into(),
            web_stores: Vec::new(),
        });
    }
    datadir::open_store(data).map_err(|e| e.to_string())
}
