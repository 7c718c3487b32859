//! `cartflow`: draw the checkout transition table, run the demo, invoke checkout actions
//! against a data directory or database, run worker processes on a shared database, serve
//! the Salesforce-shaped HTTP facade, and deliver the store's events to webhooks.

mod cli;

use std::path::PathBuf;
use std::process::ExitCode;

use cartflow::EngineConfig;
use clap::{Parser, Subcommand, ValueEnum};

/// The Salesforce B2B Commerce checkout flow as an explicit, typed finite-state machine.
#[derive(Debug, Parser)]
#[command(
    name = "cartflow",
    version,
    after_help = "\
Examples:
  cartflow demo
  cartflow diagram --format dot > states.dot
  cp -r examples/data /tmp/cart
  cartflow invoke checkoutSessionAction --input '{\"cartId\": \"0a60000000000GE\"}' \\
      --as 0050000000000G9 --data /tmp/cart
  cartflow worker --data /tmp/cart --exit-when-idle
  cartflow serve --data /tmp/cart --addr 127.0.0.1:8080
  cartflow deliver --data /tmp/cart --webhooks examples/webhooks.json

Logs go to stderr; set RUST_LOG (e.g. RUST_LOG=cartflow=debug) to see more, and
--log-format json for one JSON object per line. A log line that cannot be written is dropped."
)]
struct Cli {
    /// How log lines on stderr are written: text, or one JSON object per line.
    #[arg(long, global = true, value_enum, default_value_t = cli::LogFormat::Text)]
    log_format: cli::LogFormat,
    #[command(subcommand)]
    command: Commands,
}

#[derive(Debug, Subcommand)]
enum Commands {
    /// Print the transition table of a template (the standard one by default) as a diagram.
    #[command(after_help = "\
Examples:
  cartflow diagram --format dot > states.dot
  cartflow diagram --format dot | dot -Tsvg -o states.svg
  cartflow diagram --format mermaid > states.mmd
  cartflow diagram --template examples/templates/credit-check.json
  cartflow diagram --data /tmp/cart      # the template.json of a data directory, if it has one

A bad template is refused with exit status 2 and a message naming the step and the rule it
breaks. See docs/templates.md.")]
    Diagram {
        /// The diagram language.
        #[arg(long, value_enum, default_value_t = Format::Dot)]
        format: Format,
        #[command(flatten)]
        template: TemplateArgs,
        /// Draw the template this data directory (or the folder of a sqlite:<path>) holds in
        /// template.json; the data itself is not opened.
        #[arg(long, value_name = "DIR|URL")]
        data: Option<String>,
    },
    /// Walk a checkout through the inventory step on the sample data, in a SQLite database.
    #[command(after_help = "\
Examples:
  cartflow demo
  cartflow demo --data /tmp

Writes <DIR>/cartflow-demo.db (replacing the one a previous run left, with its -wal and
-shm files) and touches no other file. The run takes well under a second.")]
    Demo {
        /// The directory to write cartflow-demo.db in.
        #[arg(long, value_name = "DIR", default_value = ".")]
        data: PathBuf,
        /// Built-in providers (JSON, as integrations.json) to use instead of the sample ones.
        #[arg(long, value_name = "FILE")]
        integrations: Option<PathBuf>,
        /// Tell the story on this template (JSON, docs/templates.md) instead of the standard
        /// one; the directory's own template.json is not read.
        #[arg(long, value_name = "FILE")]
        template: Option<PathBuf>,
    },
    /// Invoke a checkout action on a data directory or database, as Salesforce's REST API would.
    #[command(after_help = "\
Examples (on a copy of the example directory: `cp -r examples/data /tmp/cart`):
  # Lock the Inventory step of the example session, then check stock and run the worker.
  cartflow invoke updateCheckoutSessionStateAction --as 0050000000000G9 --data /tmp/cart \\
      --input '{\"checkoutSessionId\": \"2z90000000000G9\", \"expCurrentState\": \"Inventory\", \"nextState\": \"Confirm Price\"}'
  cartflow invoke checkCartInventoryAction --as 0050000000000G9 --data /tmp/cart --wait \\
      --input '{\"cartId\": \"0a60000000000G9\"}'

  # Several inputs at once (the bulk shape): one result per input, in order.
  cartflow invoke checkoutSessionAction --as 0050000000000G9 --data /tmp/cart \\
      --input '[{\"cartId\": \"0a60000000000GE\"}, {\"cartId\": \"0a60000000000GB\"}]'

  # The same database by its file name.
  cartflow invoke cancelCartAsyncOperation --as 0050000000000G9 --data sqlite:/tmp/cart/cartflow.db \\
      --input '{\"cartId\": \"0a60000000000GE\"}'

Prints the result element (a JSON array of them for an array input) with an extra
\"httpStatus\" field. Exit status: 0 when every element succeeded, 1 when any failed,
2 for a usage or data error (nothing is written then). Each accepted call is committed
to the database at once; a refused one changes nothing. See docs/data-format.md.")]
    Invoke(InvokeArgs),
    /// Run background operations from a shared database until stopped.
    #[command(after_help = "\
Examples:
  # Two worker processes of two threads each on one data directory; Ctrl-C stops one.
  cartflow worker --data /tmp/cart --threads 2 &
  cartflow worker --data /tmp/cart --threads 2

  # Drain the queue, then exit (for scripts and batch jobs).
  cartflow worker --data sqlite:/tmp/cart/cartflow.db --exit-when-idle

  # Retry the work of a crashed worker within a second.
  cartflow worker --data /tmp/cart --lease-ms 1000 --heartbeat-ms 200

Prints one JSON line per operation run on stdout, once its result is committed:
{\"operationId\", \"name\", \"cartId\", \"attempt\", \"outcome\", \"messages\", \"applied\",
\"status\"}; \"applied\" is false when the claim had been taken over and the report was
discarded. SIGTERM or SIGINT stops the worker after the operations in hand (exit 0); a
second signal exits at once, and the claims it held are retried once their lease ends.
Inventory checks use the database's stock table; the other built-in providers come from
--integrations FILE (default: the integrations.json beside a SQLite database); give every
worker and server of one database the same file. Exit status 2 for a usage or data error.")]
    Worker(WorkerArgs),
    /// Show a cart's checkout: its lines, sessions, operations, validation outputs, orders and
    /// the history of every move.
    #[command(after_help = "\
Examples:
  cartflow inspect --cart 0a60000000000G9 --data /tmp/cart
  cartflow inspect --cart 0a60000000000G9 --data sqlite:cartflow-demo.db --json | jq .history

Exit status: 0, 1 when the store has no such cart, 2 for a usage or data error.")]
    Inspect {
        /// The cart's ID.
        #[arg(long, value_name = "CART_ID")]
        cart: String,
        /// A data directory (cartflow.db, seeded from cartflow.json), sqlite:<path>, or a
        /// postgres:// URL.
        #[arg(long, value_name = "DIR|URL")]
        data: String,
        /// Print JSON (for scripts) instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        template: TemplateArgs,
    },
    /// Seed an empty database (SQLite or PostgreSQL) from a data set file, in one transaction.
    #[command(after_help = "\
Examples:
  cartflow import --data postgres://cartflow@db/cartflow --file examples/data/cartflow.json
  cartflow import --data sqlite:/tmp/new.db --file dataset.json
  cartflow import --data /tmp/cart --file dataset.json     # creates /tmp/cart/cartflow.db

The file is the data-set JSON of docs/data-format.md (what `cartflow export` writes), checked
before any database is opened. A database that already holds a WebStore is refused; a new
SQLite file is created. Every record is written in one transaction: on any error nothing is
written (and a file this command created is removed). Exit status 0, or 2.")]
    Import(ImportArgs),
    /// Print every record of a database (SQLite or PostgreSQL) as a data set file.
    #[command(after_help = "\
Examples:
  cartflow export --data postgres://cartflow@db/cartflow > backup.json
  cartflow export --data sqlite:cartflow-demo.db --file demo.json
  cartflow export --data /tmp/cart | cartflow import --data postgres://cartflow@db/cartflow --file /dev/stdin

Records are read in one consistent view and written sorted by Id (history by time), in the
format `cartflow import` and a data directory's cartflow.json read. With --file, the file is
replaced whole or not at all. Exit status 0, or 2.")]
    Export(ExportArgs),
    /// Serve the Salesforce-shaped REST API (actions and records) over HTTP.
    #[cfg(feature = "http")]
    #[command(after_help = "\
Examples (on a copy of the example directory: `cp -r examples/data /tmp/cart`):
  cartflow serve --data /tmp/cart --addr 127.0.0.1:8080
  cd /tmp/cart && cartflow serve        # the current directory, on 127.0.0.1:8080
  cartflow serve --data /tmp/cart --addr localhost:8080 --log-format json
  curl -s http://127.0.0.1:8080/services/data/
  curl -s -H 'Authorization: Bearer <token>' -H 'Content-Type: application/json' \\
      -d '{\"inputs\": [{\"cartId\": \"0a60000000000GE\"}]}' \\
      http://127.0.0.1:8080/services/data/v64.0/actions/standard/checkoutSessionAction

  # Web nodes without workers, and worker processes beside them, on one database.
  cartflow import --data postgres://cartflow@db/cartflow --file examples/data/cartflow.json
  cartflow serve --data postgres://cartflow@db/cartflow --tokens tokens.json --workers 0 \\
      --integrations examples/data/integrations.json
  cartflow worker --data postgres://cartflow@db/cartflow \\
      --integrations examples/data/integrations.json

Tokens map to user IDs in a JSON object ({\"<token>\": \"<userId>\"}); a data directory's
tokens.json is read unless --tokens names another file. Inventory checks use the database's
stock table; the other built-in providers come from --integrations FILE (default: the
integrations.json beside a SQLite database), and each WebStore without a payment provider is
named on stderr at start (no order can be placed there). SIGTERM or SIGINT stops accepting,
lets the requests in flight finish, then stops the workers after the operations in hand
(exit 0). See docs/http.md.")]
    Serve(ServeArgs),
    /// Drive concurrent buyers through whole checkouts and summarise rates, latencies and
    /// failures.
    #[cfg(feature = "http")]
    #[command(after_help = "\
Examples:
  cartflow load --data /tmp/load --checkouts 500 --concurrency 4
  cartflow load --data /tmp/load --checkouts 500 --concurrency 4 --json
  cartflow load --data /tmp/served --checkouts 200 --seed-only
  cartflow serve --data /tmp/served --workers 2 &
  cartflow load --url http://127.0.0.1:8080 --token load-buyer-token --checkouts 200

--data seeds a new (or empty) directory with the sample world, one in-stock cart per checkout
and a token, then serves it in-process on a loopback port; existing data is never written to.
--url checks out the Active carts the token's user can read on a running server. Each buyer
walks the standard template over REST, as docs/http.md describes. A host that is not loopback
is refused unless --allow-remote is given. Exit status 0 when every checkout completed, 1 when
some failed or were not started, 2 when the run could not start. See docs/load.md.")]
    Load(LoadArgs),
    /// Deliver the store's events to webhooks (signed HTTP POSTs) until stopped.
    #[cfg(feature = "http")]
    #[command(after_help = "\
Examples:
  cartflow deliver --data /tmp/cart --webhooks examples/webhooks.json
  cartflow deliver --data postgres://cartflow@db/cartflow --webhooks webhooks.json \\
      --max-backoff-ms 10000

Each hook gets the events committed after its first run, in commit order, each until its
endpoint answers a 2xx: a failed attempt is logged and retried with a growing, randomised
wait, never dropped. Run one deliverer per hook (`serve --webhooks` and `worker --webhooks`
are deliverers too). SIGTERM or SIGINT stops it after the attempts in hand (exit 0); an
event it had not recorded as delivered is sent again by the next run. Exit status 2 for a
usage or data error. See docs/webhooks.md.")]
    Deliver(cli::deliver::DeliverArgs),
    /// Inspect webhook deliveries (`cartflow webhooks log`).
    #[cfg(feature = "http")]
    #[command(subcommand)]
    Webhooks(cli::deliver::WebhooksCommand),
}

/// The `--template` flag every command that runs or draws a checkout takes.
#[derive(Debug, clap::Args)]
struct TemplateArgs {
    /// The checkout template (JSON, docs/templates.md); default: the template.json of the
    /// data directory (or beside a sqlite:<path>), else the standard template.
    #[arg(long, value_name = "FILE")]
    template: Option<PathBuf>,
}

/// A diagram language.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    /// Graphviz DOT (the format of states.dot).
    Dot,
    /// Mermaid stateDiagram-v2.
    Mermaid,
}

/// The arguments of `cartflow invoke`.
#[derive(Debug, clap::Args)]
struct InvokeArgs {
    /// The action's API name, e.g. checkCartInventoryAction.
    #[arg(value_name = "ACTION_NAME")]
    action: String,
    /// One input object, or a JSON array of them.
    #[arg(long, value_name = "JSON")]
    input: String,
    /// The ID of the user who invokes the action.
    #[arg(long = "as", value_name = "USER_ID")]
    actor: String,
    /// A data directory (cartflow.db, seeded from cartflow.json), sqlite:<path>, or a
    /// postgres:// URL.
    #[arg(long, value_name = "DIR|URL")]
    data: String,
    /// Afterwards, run background operations until none is waiting.
    #[arg(long)]
    wait: bool,
    /// The built-in providers per store (JSON, docs/data-format.md); default: the
    /// integrations.json beside a SQLite database. The way to configure them on PostgreSQL.
    #[arg(long, value_name = "FILE")]
    integrations: Option<PathBuf>,
    #[command(flatten)]
    template: TemplateArgs,
}

/// The arguments of `cartflow import`.
#[derive(Debug, clap::Args)]
struct ImportArgs {
    /// The database to seed: a data directory (its cartflow.db), sqlite:<path>, or a
    /// postgres:// URL.
    #[arg(long, value_name = "DIR|URL")]
    data: String,
    /// The data set (JSON, docs/data-format.md).
    #[arg(long, value_name = "FILE")]
    file: PathBuf,
}

/// The arguments of `cartflow export`.
#[derive(Debug, clap::Args)]
struct ExportArgs {
    /// The database to read: a data directory (its cartflow.db), sqlite:<path>, or a
    /// postgres:// URL.
    #[arg(long, value_name = "DIR|URL")]
    data: String,
    /// Write the data set here instead of stdout.
    #[arg(long, value_name = "FILE")]
    file: Option<PathBuf>,
}

/// The arguments of `cartflow worker`.
#[derive(Debug, clap::Args)]
struct WorkerArgs {
    /// A data directory (cartflow.db, seeded from cartflow.json), sqlite:<path>, or a
    /// postgres:// URL.
    #[arg(long, value_name = "DIR|URL")]
    data: String,
    /// Worker threads in this process.
    #[arg(long, value_name = "N", default_value_t = 1)]
    threads: usize,
    /// How long a claim lasts without a heartbeat: a dead worker's operation is retried
    /// this long after its last heartbeat.
    #[arg(long, value_name = "MS", default_value_t = EngineConfig::default().lease_ms)]
    lease_ms: u64,
    /// How often a claim is renewed while a provider works (below --lease-ms).
    #[arg(long, value_name = "MS", default_value_t = EngineConfig::default().heartbeat_ms)]
    heartbeat_ms: u64,
    /// Exit once no operation is New or Running.
    #[arg(long)]
    exit_when_idle: bool,
    /// Show a running count of the operations run on stderr.
    #[arg(long)]
    progress: bool,
    /// The built-in providers per store (JSON, docs/data-format.md); default: the
    /// integrations.json beside a SQLite database. The way to configure them on PostgreSQL.
    #[arg(long, value_name = "FILE")]
    integrations: Option<PathBuf>,
    #[command(flatten)]
    template: TemplateArgs,
    #[command(flatten)]
    webhooks: cli::deliver::WebhooksFlag,
}

/// The arguments of `cartflow serve`.
#[cfg(feature = "http")]
#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// A data directory (cartflow.db, seeded from cartflow.json), sqlite:<path>, or a
    /// postgres:// URL; a directory holding neither is served as an empty in-memory store.
    #[arg(long, value_name = "DIR|URL", default_value = ".")]
    data: String,
    /// The address to listen on; the host may be a name (localhost) and port 0 picks a free
    /// port.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:8080")]
    addr: String,
    /// The token file (JSON: token -> user ID); default <DIR>/tokens.json for a data directory.
    #[arg(long, value_name = "FILE")]
    tokens: Option<PathBuf>,
    /// Worker threads running background operations in this process; 0 when separate
    /// `cartflow worker` processes share the database.
    #[arg(long, value_name = "N", default_value_t = 1)]
    workers: usize,
    /// The built-in providers per store (JSON, docs/data-format.md); default: the
    /// integrations.json beside a SQLite database. The way to configure them on PostgreSQL.
    #[arg(long, value_name = "FILE")]
    integrations: Option<PathBuf>,
    #[command(flatten)]
    template: TemplateArgs,
    #[command(flatten)]
    limits: cli::serve::Limits,
    #[command(flatten)]
    webhooks: cli::deliver::WebhooksFlag,
}

/// The arguments of `cartflow load`.
#[cfg(feature = "http")]
#[derive(Debug, clap::Args)]
struct LoadArgs {
    /// A new or empty directory to seed and serve in-process.
    #[arg(
        long,
        value_name = "DIR",
        required_unless_present = "url",
        conflicts_with = "url"
    )]
    data: Option<PathBuf>,
    /// A running server's root, http://host:port.
    #[arg(long, value_name = "URL")]
    url: Option<String>,
    /// Checkouts to run, one cart each.
    #[arg(long, value_name = "N", default_value_t = 100,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    checkouts: u64,
    /// Buyers checking out at once.
    #[arg(long, value_name = "N", default_value_t = 4,
          value_parser = clap::value_parser!(u64).range(1..=256))]
    concurrency: u64,
    /// No checkout starts after this many seconds; those left are counted as not started.
    #[arg(long, value_name = "S", default_value_t = 600,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    max_seconds: u64,
    /// The bearer token of the buyer (--url).
    #[arg(long, value_name = "TOKEN", requires = "url")]
    token: Option<String>,
    /// Worker threads of the in-process server (--data).
    #[arg(long, value_name = "N", default_value_t = 2, requires = "data")]
    workers: usize,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
    /// Accept a --url host that is not loopback.
    #[arg(long, requires = "url")]
    allow_remote: bool,
    /// Seed --data and stop, for a server to serve and a --url run to load.
    #[arg(long, requires = "data")]
    seed_only: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    cli::install_log_subscriber(cli.log_format);
    match cli.command {
        Commands::Diagram {
            format,
            template,
            data,
        } => cli::template::print_diagram(
            data.as_deref(),
            template.template.as_deref(),
            match format {
                Format::Dot => cartflow::diagram::dot,
                Format::Mermaid => cartflow::diagram::mermaid,
            },
        ),
        Commands::Demo {
            data,
            integrations,
            template,
        } => cli::demo::run(&data, integrations.as_deref(), template.as_deref()),
        Commands::Import(args) => cli::transfer::run_import(&cli::transfer::ImportRequest {
            data: args.data,
            file: args.file,
        }),
        Commands::Export(args) => cli::transfer::run_export(&cli::transfer::ExportRequest {
            data: args.data,
            file: args.file,
        }),
        Commands::Inspect {
            cart,
            data,
            json,
            template,
        } => cli::inspect::run(&cli::inspect::Request {
            cart,
            data,
            json,
            template: template.template,
        }),
        Commands::Invoke(args) => cli::invoke::run(&cli::invoke::Request {
            action: args.action,
            input: args.input,
            actor: args.actor,
            data: args.data,
            wait: args.wait,
            integrations: args.integrations,
            template: args.template.template,
        }),
        Commands::Worker(args) => cli::worker::run(&cli::worker::Request {
            data: args.data,
            threads: args.threads,
            lease_ms: args.lease_ms,
            heartbeat_ms: args.heartbeat_ms,
            exit_when_idle: args.exit_when_idle,
            progress: args.progress,
            integrations: args.integrations,
            template: args.template.template,
            webhooks: args.webhooks.webhooks,
        }),
        #[cfg(feature = "http")]
        Commands::Load(args) => cli::load::run(&load_request(args)),
        #[cfg(feature = "http")]
        Commands::Serve(args) => cli::serve::run(&cli::serve::Request {
            data: args.data,
            addr: args.addr,
            tokens: args.tokens,
            workers: args.workers,
            integrations: args.integrations,
            template: args.template.template,
            limits: args.limits,
            webhooks: args.webhooks.webhooks,
        }),
        #[cfg(feature = "http")]
        Commands::Deliver(args) => cli::deliver::run(&args),
        #[cfg(feature = "http")]
        Commands::Webhooks(command) => cli::deliver::run_webhooks(&command),
    }
}

#[cfg(feature = "http")]
fn load_request(args: LoadArgs) -> cli::load::Request {
    let target = match (args.data, args.url) {
        (Some(dir), _) => cli::load::Target::Data(dir),
        (None, url) => cli::load::Target::Url(url.unwrap_or_default()),
    };
    cli::load::Request {
        target,
        checkouts: usize::try_from(args.checkouts).unwrap_or(usize::MAX),
        concurrency: usize::try_from(args.concurrency).unwrap_or(usize::MAX),
        max_duration: std::time::Duration::from_secs(args.max_seconds),
        token: args.token,
        workers: args.workers,
        json: args.json,
        allow_remote: args.allow_remote,
        seed_only: args.seed_only,
    }
}
