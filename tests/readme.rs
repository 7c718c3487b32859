//! The README's "Over HTTP" section, run as it is written: its first `sh` block (a copy of the
//! example data, a token file, `cargo run --release -- serve ...`) and its second (the curl
//! calls) with bash. The test runs the setup lines itself, starts the server the serve line
//! describes with the binary under test (on a free port instead of 8080, in a temporary
//! directory instead of /tmp/cart), and runs the calls unchanged but for the port.

#![cfg(all(unix, feature = "http"))]

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_cartflow");
/// How long the server may take to listen before the test gives up (a bound, not a measure).
const START_BOUND: Duration = Duration::from_secs(60);
/// The address the README's blocks use.
const README_ADDR: &str = "127.0.0.1:8080";
/// The directory the README's blocks use.
const README_DIR: &str = "/tmp/cart";

/// The fenced `sh` blocks of the section whose heading is `heading`, in order.
fn sh_blocks(readme: &str, heading: &str) -> Vec<String> {
    let section = readme
        .split("\n## ")
        .find(|section| section.starts_with(heading))
        .unwrap_or_else(|| panic!("the README has no \"## {heading}\" section"));
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in section.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```sh") => current = Some(String::new()),
            (Some(_), "```") => blocks.extend(current.take()),
            (Some(block), text) => {
                block.push_str(text);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

/// Whether `program --version` runs.
fn runs(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Runs `script` with bash (stopping at the first failing command) in `dir`.
fn bash(script: &str, dir: &Path) -> std::process::Output {
    Command::new("bash")
        .args(["-e", "-u", "-o", "pipefail", "-c", script])
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// A server process, stopped with SIGTERM when dropped (a failed assertion included).
struct Server {
    child: Child,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = support::server::sigterm(&self.child);
        let _ = self.child.wait();
    }
}

/// Starts `cartflow` with `args` and waits for its "listening on http://ADDR" line.
fn start_server(args: &[String]) -> (Server, String) {
    let started = support::server::start_listening(Command::new(BIN).args(args), START_BOUND);
    (
        Server {
            child: started.child,
        },
        started.address,
    )
}

#[test]
fn the_readme_over_http_blocks_run_as_written() {
    for program in ["bash", "curl"] {
        if !runs(program) {
            eprintln!("README curl test skipped: `{program}` is not installed");
            return;
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let blocks = sh_blocks(&readme, "Over HTTP");
    let [setup, calls] = blocks.as_slice() else {
        panic!("expected two sh blocks (the server, the calls), found {blocks:?}");
    };

    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("cart");
    let data = data.to_str().unwrap();
    let (serve, prepare): (Vec<&str>, Vec<&str>) =
        setup.lines().partition(|line| line.contains(" serve "));
    let [serve] = serve.as_slice() else {
        panic!("the setup block has no single serve line: {setup}");
    };
    // The copy and the token file, from the repository's root as the README assumes.
    let prepared = bash(&prepare.join("\n").replace(README_DIR, data), root);
    assert!(
        prepared.status.success(),
        "the setup lines failed: {}",
        String::from_utf8_lossy(&prepared.stderr)
    );
    assert!(Path::new(data).join("tokens.json").is_file());

    let args = serve
        .strip_prefix("cargo run --release -- ")
        .unwrap_or_else(|| panic!("the serve line does not run the release build: {serve}"));
    let args: Vec<String> = args
        .split_whitespace()
        .map(|arg| {
            arg.replace(README_DIR, data)
                .replace(README_ADDR, "127.0.0.1:0")
        })
        .collect();
    let (_server, address) = start_server(&args);

    let ran = bash(&calls.replace(README_ADDR, &address), tmp.path());
    let stdout = String::from_utf8_lossy(&ran.stdout);
    let stderr = String::from_utf8_lossy(&ran.stderr);
    assert!(
        ran.status.success() && stderr.is_empty(),
        "the calls failed ({}): {stderr}\nstdout: {stdout}",
        ran.status
    );
    // What the block's comments promise: the versions, the session at its new State (read,
    // and found by a query), and the refusal of a call without a token.
    assert!(stdout.contains(r#""version":"64.0""#), "{stdout}");
    assert!(stdout.contains(r#""State":"Shipping Address""#), "{stdout}");
    assert!(stdout.contains(r#""Id":"2z9"#), "{stdout}");
    assert!(stdout.contains(r#""totalSize":1"#), "{stdout}");
    assert!(stdout.contains("INVALID_SESSION_ID"), "{stdout}");
    assert!(!stdout.contains("NOT_FOUND"), "{stdout}");
}
