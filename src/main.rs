//! `cartflow`: draw the checkout transition table, run the demo, and invoke checkout actions
//! against a data directory.

mod cli;

use std::path::PathBuf;
use std::process::ExitCode;

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
  cartflow invoke checkoutSessionAction --input '{\"cartId\": \"0a60000000000GE\"}' \\
      --as 0050000000000G9 --data examples/data

Logs go to stderr; set RUST_LOG (e.g. RUST_LOG=cartflow=debug) to see more."
)]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Debug, Subcommand)]
enum Commands {
    /// Print the transition table of the standard template as a diagram.
    #[command(after_help = "\
Examples:
  cartflow diagram --format dot > states.dot
  cartflow diagram --format dot | dot -Tsvg -o states.svg
  cartflow diagram --format mermaid > states.mmd")]
    Diagram {
        /// The diagram language.
        #[arg(long, value_enum, default_value_t = Format::Dot)]
        format: Format,
    },
    /// Walk a checkout through the inventory step on the sample data, in memory.
    #[command(after_help = "\
Example:
  cartflow demo

Nothing is written to disk; the run takes well under a second.")]
    Demo,
    /// Invoke a checkout action on a data directory, as Salesforce's REST API would.
    #[command(after_help = "\
Examples:
  # Lock the Inventory step of the example session, then check stock and run the worker.
  cartflow invoke updateCheckoutSessionStateAction --as 0050000000000G9 --data examples/data \\
      --input '{\"checkoutSessionId\": \"2z90000000000G9\", \"expCurrentState\": \"Inventory\", \"nextState\": \"Confirm Price\"}'
  cartflow invoke checkCartInventoryAction --as 0050000000000G9 --data examples/data --wait \\
      --input '{\"cartId\": \"0a60000000000G9\"}'

  # Several inputs at once (the bulk shape): one result per input, in order.
  cartflow invoke checkoutSessionAction --as 0050000000000G9 --data examples/data \\
      --input '[{\"cartId\": \"0a60000000000GE\"}, {\"cartId\": \"0a60000000000GB\"}]'

Prints the result element (a JSON array of them for an array input) with an extra
\"httpStatus\" field. Exit status: 0 when every element succeeded, 1 when any failed,
2 for a usage or data error (nothing is written then). The data file is rewritten,
atomically, only when something changed. See docs/data-format.md.")]
    Invoke(InvokeArgs),
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
    /// The data directory holding cartflow.json.
    #[arg(long, value_name = "DIR")]
    data: PathBuf,
    /// Afterwards, run background operations until none is waiting.
    #[arg(long)]
    wait: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    cli::install_log_subscriber();
    match cli.command {
        Commands::Diagram { format } => {
            let table = cartflow::machine::TransitionTable::standard();
            let text = match format {
                Format::Dot => cartflow::diagram::dot(&table),
                Format::Mermaid => cartflow::diagram::mermaid(&table),
            };
            cli::print_stdout(&text)
        }
        Commands::Demo => cli::demo::run(),
        Commands::Invoke(args) => cli::invoke::run(&cli::invoke::Request {
            action: args.action,
            input: args.input,
            actor: args.actor,
            data: args.data,
            wait: args.wait,
        }),
    }
}
