//! The `cartflow` binary, run as a user would: the demo, the diagram, `invoke` against a
//! SQLite data directory (seeded from its `cartflow.json`) in a temporary folder, and a
//! worker draining what `invoke` queued. Results are read back from the database.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use cartflow::model::{
    CartCheckoutSession, CartStatus, KeyPrefix, OperationStatus, SessionState, SfId,
};
use cartflow::sample::{self, SampleCart};
use cartflow::store::{DataSet, Durability, SqliteStore};
use cartflow::{MemoryStore, Store as _};
use serde_json::{Value, json};
use tempfile::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_cartflow");

/// The session the prepared data set holds for the in-stock cart, at `Inventory`.
fn inventory_session_id() -> SfId {
    SfId::from_number(KeyPrefix::CartCheckoutSession, 9_001)
}

/// The sample data with the in-stock cart in checkout and its session at `Inventory`, as the
/// two screen steps leave it (screen steps are record writes, not invocable actions).
fn prepared() -> DataSet {
    support::data::in_checkout_at(inventory_session_id(), SessionState::Inventory, false)
}

/// A temporary data directory whose `cartflow.json` holds `data`; the binary creates
/// `cartflow.db` beside it on first use.
struct DataDir {
    tmp: TempDir,
}

impl DataDir {
    fn new(data: &DataSet) -> DataDir {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(
            tmp.path().join("cartflow.json"),
            serde_json::to_string(data).unwrap(),
        )
        .unwrap();
        DataDir { tmp }
    }

    fn path(&self) -> &Path {
        self.tmp.path()
    }

    fn seed_file(&self) -> PathBuf {
        self.path().join("cartflow.json")
    }

    fn db_file(&self) -> PathBuf {
        self.path().join("cartflow.db")
    }

    fn seed_bytes(&self) -> Vec<u8> {
        fs::read(self.seed_file()).unwrap()
    }

    /// Every record in the database (which must exist: reading never creates it).
    fn data(&self) -> DataSet {
        assert!(self.db_file().is_file(), "no database yet");
        let store = SqliteStore::open(self.db_file(), Durability::Normal).unwrap();
        store.integrity_check().unwrap();
        store.export().unwrap()
    }

    fn session(&self, id: &SfId) -> CartCheckoutSession {
        self.data()
            .sessions
            .into_iter()
            .find(|s| s.id == *id)
            .unwrap()
    }

    /// Runs `cartflow invoke` in the directory.
    fn invoke(&self, action: &str, input: &Value, actor: &SfId, wait: bool) -> Invoked {
        self.invoke_on(
            &self.path().display().to_string(),
            action,
            input,
            actor,
            wait,
        )
    }

    /// Runs `cartflow invoke` with `--data <data>`.
    fn invoke_on(
        &self,
        data: &str,
        action: &str,
        input: &Value,
        actor: &SfId,
        wait: bool,
    ) -> Invoked {
        let mut args = vec![
            "invoke".to_owned(),
            action.to_owned(),
            "--input".to_owned(),
            input.to_string(),
            "--as".to_owned(),
            actor.to_string(),
            "--data".to_owned(),
            data.to_owned(),
        ];
        if wait {
            args.push("--wait".to_owned());
        }
        Invoked::from(run(self.path(), &args))
    }
}

/// What a freshly seeded database must hold: the seed in the in-memory store's order, with
/// stock sorted by store and SKU as the database reads it back.
fn as_seeded(data: DataSet) -> DataSet {
    let mut data = MemoryStore::from_dataset(data).unwrap().to_dataset();
    data.stock
        .sort_by(|a, b| (a.store_id, &a.sku).cmp(&(b.store_id, &b.sku)));
    data
}

/// The outcome of one `cartflow invoke`.
struct Invoked {
    code: i32,
    stdout: Value,
    stderr: String,
}

impl From<Output> for Invoked {
    fn from(output: Output) -> Invoked {
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(!stderr.contains("panicked"), "{stderr}");
        Invoked {
            code: output.status.code().expect("exited"),
            stdout: serde_json::from_slice(&output.stdout).unwrap_or(Value::Null),
            stderr,
        }
    }
}

impl Invoked {
    fn output(&self, key: &str) -> String {
        assert_eq!(self.code, 0, "{} {}", self.stdout, self.stderr);
        assert_eq!(self.stdout["isSuccess"], true);
        assert_eq!(self.stdout["httpStatus"], 200);
        self.stdout["outputValues"][key]
            .as_str()
            .unwrap()
            .to_owned()
    }
}

fn run<S: AsRef<std::ffi::OsStr>>(dir: &Path, args: &[S]) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

fn cart_input(cart: SfId) -> Value {
    json!({"cartId": cart.to_string()})
}

/// The names in a directory, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn the_demo_exits_zero_and_prints_the_seven_error_codes() {
    let tmp = tempfile::tempdir().unwrap();
    let output = run(tmp.path(), &["demo"]);
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    // A refusal line carries the errorCode followed by the HTTP status.
    let count = |code: &str, status: &str| {
        stdout
            .lines()
            .filter(|line| {
                let words: Vec<&str> = line.split_whitespace().collect();
                words.windows(2).any(|w| w == [code, status])
            })
            .count()
    };
    assert_eq!(count("UNKNOWN_EXCEPTION", "500"), 1, "{stdout}");
    assert_eq!(count("BAD_REQUEST", "400"), 2, "{stdout}");
    assert_eq!(count("INVALID_OPERATION", "403"), 1, "{stdout}");
    assert_eq!(count("ALREADY_IN_PROCESS", "400"), 1, "{stdout}");
    assert_eq!(
        count("INSUFFICIENT_ACCESS_OR_READONLY", "500"),
        2,
        "{stdout}"
    );
    assert!(stdout.contains("State Confirm Price, IsProcessing false, IsError false"));
    assert!(stdout.contains("State Error, IsProcessing false, IsError true"));
    assert!(stdout.contains("SKU STOVE-X: 2 wanted, only 1 available."));
    assert!(stdout.contains("SKU TENT-4P: 5 wanted, only 4 available."));
}

#[test]
fn the_demo_leaves_a_sqlite_database_and_tells_the_same_story_on_rerun() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("cartflow-demo.db");
    let first = run(tmp.path(), &["demo"]);
    assert!(first.status.success(), "{first:?}");
    let stdout = String::from_utf8(first.stdout.clone()).unwrap();
    let shown = db.canonicalize().unwrap();
    assert!(
        stdout.contains(&shown.display().to_string()),
        "the demo says where its database is: {stdout}"
    );
    // Only the demo's database (SQLite may leave its -wal and -shm files beside it).
    for name in names(tmp.path()) {
        assert!(name.starts_with("cartflow-demo.db"), "{name}");
    }
    let read = || {
        let store = SqliteStore::open(&db, Durability::Normal).unwrap();
        store.integrity_check().unwrap();
        store.export().unwrap()
    };
    let data = read();
    let status_of = |data: &DataSet, status: OperationStatus| {
        data.operations
            .iter()
            .filter(|op| op.status == status)
            .count()
    };
    assert_eq!(
        status_of(&data, OperationStatus::New),
        1,
        "the double click"
    );
    // Short stock and the declined payment.
    assert_eq!(status_of(&data, OperationStatus::Error), 2);
    let in_stock = data
        .sessions
        .iter()
        .find(|s| s.web_cart_id == SampleCart::InStock.id())
        .unwrap();
    assert_eq!(in_stock.state, Some(SessionState::Complete));
    let orders = |status: cartflow::model::OrderStatus| {
        data.orders.iter().filter(|o| o.status == status).count()
    };
    assert_eq!(orders(cartflow::model::OrderStatus::Activated), 1);
    assert_eq!(
        orders(cartflow::model::OrderStatus::Draft),
        1,
        "the declined one"
    );

    // Other files in the directory, and a stale -wal of the demo's, before the rerun.
    let others = [
        ("cartflow.db", b"not the demo's".as_slice()),
        ("cartflow.json", b"{}".as_slice()),
        ("notes.txt", b"keep me".as_slice()),
    ];
    for (name, bytes) in others {
        fs::write(tmp.path().join(name), bytes).unwrap();
    }
    fs::write(tmp.path().join("cartflow-demo.db-wal"), b"stale").unwrap();
    let second = run(tmp.path(), &["demo"]);
    assert!(second.status.success(), "{second:?}");
    assert_eq!(
        String::from_utf8(second.stdout).unwrap(),
        stdout,
        "a rerun tells the same story"
    );
    for (name, bytes) in others {
        assert_eq!(fs::read(tmp.path().join(name)).unwrap(), bytes, "{name}");
    }
    let again = read();
    let ids = |data: &DataSet| {
        (
            data.sessions.iter().map(|s| s.id).collect::<Vec<_>>(),
            data.operations
                .iter()
                .map(|o| (o.id, o.status))
                .collect::<Vec<_>>(),
            data.validation_outputs.len(),
            data.history.len(),
        )
    };
    assert_eq!(ids(&again), ids(&data), "the rerun replaced the database");

    // A directory that does not exist is a usage error, and is not created.
    let missing = tmp.path().join("nowhere");
    let output = run(tmp.path(), &["demo", "--data", missing.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    assert!(!missing.exists());
}

#[test]
fn diagram_dot_prints_states_dot() {
    let tmp = tempfile::tempdir().unwrap();
    let output = run(tmp.path(), &["diagram", "--format", "dot"]);
    assert!(output.status.success());
    let committed = fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/states.dot")).unwrap();
    assert!(
        output.stdout == committed,
        "states.dot is stale: run `cargo run -- diagram --format dot > states.dot`"
    );

    let output = run(tmp.path(), &["diagram", "--format", "mermaid"]);
    assert!(output.status.success());
    let mermaid = String::from_utf8(output.stdout).unwrap();
    assert!(mermaid.starts_with("stateDiagram-v2\n"));
    assert!(mermaid.contains("checkCartInventoryAction"));

    let output = run(tmp.path(), &["diagram", "--format", "svg"]);
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn invoke_answers_each_documented_error_row_of_check_cart_inventory() {
    let dir = DataDir::new(&prepared());
    let buyer = sample::buyer_id();
    let in_stock = SampleCart::InStock.id();
    let check = "checkCartInventoryAction";

    let refused = |row: &str, input: Value, actor: SfId, code: &str, status: u16| {
        let result = dir.invoke(check, &input, &actor, false);
        assert_eq!(result.code, 1, "{row}: {}", result.stdout);
        assert_eq!(result.stdout["actionName"], check, "{row}");
        assert_eq!(result.stdout["isSuccess"], false, "{row}");
        assert_eq!(result.stdout["outputValues"], Value::Null, "{row}");
        assert_eq!(result.stdout["errors"][0]["statusCode"], code, "{row}");
        assert_eq!(result.stdout["httpStatus"], status, "{row}");
    };
    let refusal = |row: &str, input: Value, actor: SfId, code: &str, status: u16| {
        let before = dir.data();
        refused(row, input, actor, code, status);
        assert!(
            dir.data() == before,
            "{row}: a refused call changed the database"
        );
    };

    // The first call seeds the database with exactly the JSON; its refusal adds nothing.
    assert!(!dir.db_file().exists());
    refused(
        "invalid cartId",
        json!({"cartId": "not-a-cart-id"}),
        buyer,
        "UNKNOWN_EXCEPTION",
        500,
    );
    let (got, want) = (
        serde_json::to_value(dir.data()).unwrap(),
        serde_json::to_value(as_seeded(prepared())).unwrap(),
    );
    for (key, records) in want.as_object().unwrap() {
        assert_eq!(&got[key], records, "the seeded {key}");
    }

    refusal(
        "no such cart",
        cart_input(SfId::from_number(KeyPrefix::WebCart, 777)),
        buyer,
        "UNKNOWN_EXCEPTION",
        500,
    );
    refusal(
        "caller can't invoke the action",
        cart_input(in_stock),
        sample::no_permission_id(),
        "BAD_REQUEST",
        400,
    );
    refusal(
        "caller has no access to the cart",
        cart_input(in_stock),
        sample::reader_id(),
        "BAD_REQUEST",
        400,
    );
    refusal(
        "cart isn't in Checkout",
        cart_input(SampleCart::ShortStock.id()),
        buyer,
        "INVALID_OPERATION",
        403,
    );
    refusal(
        "effective account isn't valid",
        cart_input(SampleCart::InactiveAccount.id()),
        buyer,
        "INSUFFICIENT_ACCESS_OR_READONLY",
        500,
    );
    refusal(
        "caller isn't a member of the store",
        cart_input(SampleCart::ForeignStore.id()),
        buyer,
        "INSUFFICIENT_ACCESS_OR_READONLY",
        500,
    );

    // Already in process: lock the step, start the check without running the worker, and
    // call again (a double click). Each accepted call is committed for the next process.
    dir.invoke(
        "updateCheckoutSessionStateAction",
        &json!({"checkoutSessionId": inventory_session_id().to_string(),
                "expCurrentState": "Inventory", "nextState": "Confirm Price"}),
        &buyer,
        false,
    )
    .output("requestId");
    let first = dir
        .invoke(check, &cart_input(in_stock), &buyer, false)
        .output("backgroundOperationId");
    let pending = dir.data();
    let op = pending
        .operations
        .iter()
        .find(|o| o.id.to_string() == first)
        .unwrap();
    assert_eq!(op.status, OperationStatus::New);
    refusal(
        "already in process",
        cart_input(in_stock),
        buyer,
        "ALREADY_IN_PROCESS",
        400,
    );
}

#[test]
fn invoke_walks_a_checkout_through_the_inventory_step() {
    let dir = DataDir::new(&prepared());
    let seed = dir.seed_bytes();
    let buyer = sample::buyer_id();

    // checkoutSessionAction on a fresh cart: the cart moves to Checkout, a session starts.
    let fresh = SampleCart::ShortStock.id();
    let started = dir
        .invoke(
            "checkoutSessionAction",
            &json!({"cartId": fresh.to_string(), "initialState": "Start"}),
            &buyer,
            false,
        )
        .output("requestId");
    let session = dir.session(&started.parse().unwrap());
    assert_eq!(session.state, Some(SessionState::Start));
    assert_eq!(session.web_cart_id, fresh);
    let cart = dir
        .data()
        .carts
        .into_iter()
        .find(|c| c.id == fresh)
        .unwrap();
    assert_eq!(cart.status, CartStatus::Checkout);

    // The prepared session is at Inventory: lock it, then check stock and run the worker.
    let session_id = inventory_session_id();
    let locked = dir
        .invoke(
            "updateCheckoutSessionStateAction",
            &json!({"checkoutSessionId": session_id.to_string(),
                    "expCurrentState": "Inventory", "nextState": "Confirm Price"}),
            &buyer,
            false,
        )
        .output("requestId");
    assert_eq!(locked, session_id.to_string());
    let session = dir.session(&session_id);
    assert!(session.is_processing);
    assert_eq!(session.next_state, Some(SessionState::ConfirmPrice));

    let checked = dir.invoke(
        "checkCartInventoryAction",
        &cart_input(SampleCart::InStock.id()),
        &buyer,
        true,
    );
    let operation = checked.output("backgroundOperationId");
    assert!(
        checked.stderr.contains("ended Complete"),
        "{}",
        checked.stderr
    );
    let data = dir.data();
    let session = data.sessions.iter().find(|s| s.id == session_id).unwrap();
    assert_eq!(session.state, Some(SessionState::ConfirmPrice));
    assert!(!session.is_processing && !session.is_error);
    let op = data
        .operations
        .iter()
        .find(|o| o.id.to_string() == operation)
        .unwrap();
    assert_eq!(op.status, OperationStatus::Complete);
    assert!(!data.history.is_empty());

    // Commits go to the database: the seed is left as it was, and the database is closed
    // cleanly (no -wal or -shm file left behind).
    assert_eq!(dir.seed_bytes(), seed);
    assert_eq!(names(dir.path()), ["cartflow.db", "cartflow.json"]);
}

#[test]
fn the_seed_is_imported_once_and_a_sqlite_location_names_the_same_database() {
    let dir = DataDir::new(&prepared());
    let buyer = sample::buyer_id();
    let fresh = SampleCart::ShortStock.id();
    dir.invoke("checkoutSessionAction", &cart_input(fresh), &buyer, false)
        .output("requestId");

    // Once the database holds the seed, cartflow.json is not read again.
    fs::write(dir.seed_file(), "not JSON at all").unwrap();
    let by_url = format!("sqlite:{}", dir.db_file().display());
    let cancelled = dir.invoke_on(
        &by_url,
        "cancelCartAsyncOperation",
        &cart_input(fresh),
        &buyer,
        false,
    );
    assert_eq!(cancelled.code, 0, "{}", cancelled.stderr);
    let cart = |dir: &DataDir| {
        dir.data()
            .carts
            .into_iter()
            .find(|c| c.id == fresh)
            .unwrap()
    };
    assert_eq!(cart(&dir).status, CartStatus::Active);
    let again = dir.invoke("checkoutSessionAction", &cart_input(fresh), &buyer, false);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert_eq!(cart(&dir).status, CartStatus::Checkout);

    // An empty database (as a fresh SqliteStore leaves it) is seeded too.
    let empty = DataDir::new(&prepared());
    drop(SqliteStore::open(empty.db_file(), Durability::Normal).unwrap());
    assert!(empty.data().stores.is_empty());
    empty
        .invoke("checkoutSessionAction", &cart_input(fresh), &buyer, false)
        .output("requestId");
    assert_eq!(empty.data().stores.len(), prepared().stores.len());
}

#[test]
fn a_bulk_input_answers_one_element_per_input_in_order() {
    let dir = DataDir::new(&prepared());
    let inputs = json!([
        cart_input(SampleCart::Closed.id()),
        cart_input(SampleCart::ShortStock.id()),
        {"cartId": SampleCart::InactiveAccount.id().to_string(), "bogus": 1},
    ]);
    let result = dir.invoke("checkoutSessionAction", &inputs, &sample::buyer_id(), false);
    assert_eq!(result.code, 1);
    let elements = result.stdout.as_array().unwrap();
    assert_eq!(elements.len(), 3);
    assert_eq!(elements[0]["errors"][0]["statusCode"], "INVALID_OPERATION");
    assert_eq!(elements[0]["httpStatus"], 403);
    assert_eq!(elements[1]["isSuccess"], true);
    assert_eq!(elements[1]["httpStatus"], 200);
    assert_eq!(elements[2]["errors"][0]["statusCode"], "INVALID_INPUT");
    // The one success was kept.
    let cart = dir
        .data()
        .carts
        .into_iter()
        .find(|c| c.id == SampleCart::ShortStock.id())
        .unwrap();
    assert_eq!(cart.status, CartStatus::Checkout);

    // Every element succeeding exits 0, with an array still printed.
    let result = dir.invoke(
        "cancelCartAsyncOperation",
        &json!([cart_input(SampleCart::ShortStock.id())]),
        &sample::buyer_id(),
        false,
    );
    assert_eq!(result.code, 0, "{}", result.stdout);
    assert_eq!(result.stdout.as_array().unwrap().len(), 1);
}

#[test]
fn bad_data_or_usage_exits_2_and_changes_nothing() {
    let buyer = sample::buyer_id();
    let input = cart_input(SampleCart::InStock.id());
    let cases: [(&str, String); 7] = [
        ("truncated JSON", "{\"stores\": [".to_owned()),
        (
            "unknown field",
            "{\"stores\": [], \"carts\": [], \"shops\": []}".to_owned(),
        ),
        ("wrong type", "{\"carts\": 3}".to_owned()),
        ("duplicate IDs", {
            let mut data = sample::dataset();
            data.users.push(data.users[0].clone());
            serde_json::to_string(&data).unwrap()
        }),
        ("a SKU stocked twice", {
            let mut data = sample::dataset();
            data.stock.push(data.stock[0].clone());
            serde_json::to_string(&data).unwrap()
        }),
        ("no store", "{\"carts\": []}".to_owned()),
        ("an empty object", "{}".to_owned()),
    ];
    for (what, text) in cases {
        let dir = DataDir::new(&DataSet::default());
        fs::write(dir.seed_file(), &text).unwrap();
        let result = dir.invoke("checkCartInventoryAction", &input, &buyer, true);
        assert_eq!(result.code, 2, "{what}: {}", result.stderr);
        assert!(
            result.stderr.contains("cartflow.json"),
            "{what}: {}",
            result.stderr
        );
        assert_eq!(result.stdout, Value::Null, "{what}: nothing on stdout");
        assert_eq!(fs::read_to_string(dir.seed_file()).unwrap(), text, "{what}");
        assert_eq!(names(dir.path()), ["cartflow.json"], "{what}: no database");
    }

    // A missing directory, a directory without data, a file that is no database.
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nowhere");
    let cases = [
        (missing.display().to_string(), "does not exist"),
        (tmp.path().display().to_string(), "holds neither"),
        (
            format!("sqlite:{}", tmp.path().join("none.db").display()),
            "no SQLite database",
        ),
        (
            // No server listens there: a clear error naming the database, never a panic.
            "postgres://cartflow:secret@127.0.0.1:1/cartflow".to_owned(),
            "postgres://cartflow:***@127.0.0.1:1/cartflow",
        ),
    ];
    for (data, message) in cases {
        let output = run(
            tmp.path(),
            &[
                "invoke",
                "checkCartInventoryAction",
                "--input",
                "{}",
                "--as",
                "005000000000001",
                "--data",
                &data,
            ],
        );
        assert_eq!(output.status.code(), Some(2), "{data}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(message), "{data}: {stderr}");
        assert!(output.stdout.is_empty(), "{data}");
    }
    assert!(!missing.exists());
    assert!(names(tmp.path()).is_empty(), "nothing was created");

    let junk = DataDir::new(&prepared());
    fs::write(junk.db_file(), b"this is not a SQLite database, not at all").unwrap();
    let result = junk.invoke("checkCartInventoryAction", &input, &buyer, false);
    assert_eq!(result.code, 2);
    assert!(result.stderr.contains("cartflow.db"), "{}", result.stderr);
    assert_eq!(
        fs::read(junk.db_file()).unwrap(),
        b"this is not a SQLite database, not at all"
    );

    // Malformed --input, before and after the database exists.
    let dir = DataDir::new(&prepared());
    let bad_input = |dir: &DataDir| {
        let output = run(
            dir.path(),
            &[
                "invoke",
                "checkCartInventoryAction",
                "--input",
                "{\"cartId\": ",
                "--as",
                &buyer.to_string(),
                "--data",
                ".",
            ],
        );
        assert_eq!(output.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&output.stderr).contains("--input is not valid JSON"));
    };
    bad_input(&dir);
    assert!(!dir.db_file().exists(), "a usage error opens nothing");
    dir.invoke("checkoutSessionAction", &input, &buyer, false);
    let before = dir.data();
    bad_input(&dir);
    assert!(dir.data() == before);

    // A required argument left out is a clap usage error: exit 2 too.
    let output = run(dir.path(), &["invoke", "checkCartInventoryAction"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(dir.data() == before);
}

#[test]
fn the_example_data_directory_walks_through_the_inventory_step() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data/cartflow.json");
    let data: DataSet = serde_json::from_slice(&fs::read(&example).unwrap()).unwrap();
    let dir = DataDir::new(&data);
    let buyer = sample::buyer_id();

    // As docs/data-format.md walks it: the 15-character IDs it shows are accepted.
    let session = &data
        .sessions
        .iter()
        .find(|s| s.web_cart_id == SampleCart::InStock.id())
        .unwrap();
    assert_eq!(session.state, Some(SessionState::Inventory));
    dir.invoke(
        "updateCheckoutSessionStateAction",
        &json!({"checkoutSessionId": session.id.to_15(),
                "expCurrentState": "Inventory", "nextState": "Confirm Price"}),
        &buyer,
        false,
    )
    .output("requestId");
    let checked = dir.invoke(
        "checkCartInventoryAction",
        &json!({"cartId": SampleCart::InStock.id().to_15()}),
        &buyer,
        true,
    );
    checked.output("backgroundOperationId");
    assert_eq!(
        dir.session(&session.id).state,
        Some(SessionState::ConfirmPrice)
    );

    // The short cart fails the check, and the worker says why.
    let short = data
        .sessions
        .iter()
        .find(|s| s.web_cart_id == SampleCart::ShortStock.id())
        .unwrap();
    dir.invoke(
        "updateCheckoutSessionStateAction",
        &json!({"checkoutSessionId": short.id.to_string(),
                "expCurrentState": "Inventory", "nextState": "Confirm Price"}),
        &buyer,
        false,
    )
    .output("requestId");
    let checked = dir.invoke(
        "checkCartInventoryAction",
        &cart_input(SampleCart::ShortStock.id()),
        &buyer,
        true,
    );
    checked.output("backgroundOperationId");
    assert!(
        checked
            .stderr
            .contains("SKU STOVE-X: 2 wanted, only 1 available."),
        "{}",
        checked.stderr
    );
    let after = dir.session(&short.id);
    assert_eq!(after.state, Some(SessionState::Error));
    assert!(after.is_error);
}

#[test]
fn a_worker_drains_what_invoke_queued_and_exits_when_idle() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data/cartflow.json");
    let data: DataSet = serde_json::from_slice(&fs::read(&example).unwrap()).unwrap();
    let dir = DataDir::new(&data);
    let buyer = sample::buyer_id();
    let mut queued = Vec::new();
    for cart in [SampleCart::InStock, SampleCart::ShortStock] {
        let session = data
            .sessions
            .iter()
            .find(|s| s.web_cart_id == cart.id())
            .unwrap();
        dir.invoke(
            "updateCheckoutSessionStateAction",
            &json!({"checkoutSessionId": session.id.to_string(),
                    "expCurrentState": "Inventory", "nextState": "Confirm Price"}),
            &buyer,
            false,
        )
        .output("requestId");
        let op = dir
            .invoke(
                "checkCartInventoryAction",
                &cart_input(cart.id()),
                &buyer,
                false,
            )
            .output("backgroundOperationId");
        queued.push((op.parse::<SfId>().unwrap(), session.id));
    }

    let output = run(
        dir.path(),
        &[
            "worker",
            "--data",
            ".",
            "--threads",
            "2",
            "--exit-when-idle",
            "--progress",
        ],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    // The progress display's last word, on stderr so stdout stays one JSON line per operation.
    assert!(
        stderr.contains("2 operation(s) run: 1 Complete, 1 Error, 0 discarded"),
        "{stderr}"
    );
    // One JSON line per operation, each applied, in whatever order the threads took them.
    let mut lines: Vec<Value> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    lines.sort_by_key(|line| line["operationId"].as_str().unwrap().to_owned());
    let mut expected = vec![
        (queued[0].0.to_string(), "Complete"),
        (queued[1].0.to_string(), "Error"),
    ];
    expected.sort();
    let reported: Vec<(String, &str)> = lines
        .iter()
        .map(|line| {
            assert_eq!(line["applied"], true, "{line}");
            (
                line["operationId"].as_str().unwrap().to_owned(),
                line["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(reported, expected);
    let failed = lines.iter().find(|line| line["status"] == "Error").unwrap();
    assert!(
        failed["messages"]
            .as_array()
            .unwrap()
            .contains(&json!("SKU STOVE-X: 2 wanted, only 1 available.")),
        "{failed}"
    );
    assert_eq!(
        dir.session(&queued[0].1).state,
        Some(SessionState::ConfirmPrice)
    );
    assert_eq!(dir.session(&queued[1].1).state, Some(SessionState::Error));

    // Nothing left: a second worker exits at once, having run nothing.
    let output = run(dir.path(), &["worker", "--data", ".", "--exit-when-idle"]);
    assert_eq!(output.status.code(), Some(0));
    assert!(output.stdout.is_empty());

    // Usage errors.
    for args in [
        &["worker", "--data", ".", "--threads", "0"][..],
        &[
            "worker",
            "--data",
            ".",
            "--lease-ms",
            "100",
            "--heartbeat-ms",
            "100",
        ],
        &["worker", "--data", "postgresql://127.0.0.1:1/cartflow"],
        &["worker"],
    ] {
        let output = run(dir.path(), args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
    }
    let help = run(dir.path(), &["worker", "--help"]);
    let help = String::from_utf8(help.stdout).unwrap();
    assert!(help.contains("Examples:") && help.contains("--exit-when-idle"));
}

#[test]
fn the_small_example_of_the_data_format_doc_works_as_written() {
    let doc =
        fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/data-format.md")).unwrap();
    let start = doc.find("```json\n").expect("a JSON example") + "```json\n".len();
    let example = &doc[start..start + doc[start..].find("```").unwrap()];
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("cartflow.json"), example).unwrap();
    let dir = DataDir { tmp };
    let buyer: SfId = "005000000000001".parse().unwrap();
    dir.invoke(
        "updateCheckoutSessionStateAction",
        &json!({"checkoutSessionId": "2z9000000000001",
                "expCurrentState": "Inventory", "nextState": "Confirm Price"}),
        &buyer,
        false,
    )
    .output("requestId");
    let op = dir
        .invoke(
            "checkCartInventoryAction",
            &json!({"cartId": "0a6000000000001"}),
            &buyer,
            true,
        )
        .output("backgroundOperationId");
    let session = dir.session(&"2z9000000000001".parse().unwrap());
    assert_eq!(session.state, Some(SessionState::ConfirmPrice));
    let data = dir.data();
    let op = data
        .operations
        .iter()
        .find(|o| o.id.to_string() == op)
        .unwrap();
    assert_eq!(op.status, OperationStatus::Complete);
    // The database spells IDs in their 18-character form; the seed stays as written.
    assert_eq!(op.cart_id.to_string(), "0a6000000000001AAA");
    assert_eq!(fs::read_to_string(dir.seed_file()).unwrap(), example);
}

#[path = "support/mod.rs"]
mod support;

#[test]
fn invoke_and_worker_run_against_a_postgresql_url() {
    let Some(db) = support::postgres() else {
        return;
    };
    let store = cartflow::store::PostgresStore::connect(db.url()).unwrap();
    store.import(&prepared()).unwrap();
    drop(store);
    let url = db.cli_url();
    let tmp = tempfile::tempdir().unwrap();
    let actor = sample::buyer_id().to_string();
    let lock = json!({
        "checkoutSessionId": inventory_session_id().to_string(),
        "expCurrentState": "Inventory",
        "nextState": "Confirm Price"
    });
    let steps: [(&str, Value); 2] = [
        ("updateCheckoutSessionStateAction", lock),
        (
            "checkCartInventoryAction",
            cart_input(SampleCart::InStock.id()),
        ),
    ];
    for (action, input) in steps {
        let output = run(
            tmp.path(),
            &[
                "invoke",
                action,
                "--input",
                &input.to_string(),
                "--as",
                &actor,
                "--data",
                &url,
            ],
        );
        assert_eq!(
            output.status.code(),
            Some(0),
            "{action}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let worker = run(tmp.path(), &["worker", "--data", &url, "--exit-when-idle"]);
    assert_eq!(
        worker.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&worker.stderr)
    );
    let store = cartflow::store::PostgresStore::connect(db.url()).unwrap();
    let session = cartflow::Store::session(&store, &inventory_session_id())
        .unwrap()
        .unwrap();
    assert_eq!(session.state, Some(SessionState::ConfirmPrice));
    assert!(
        tmp.path().read_dir().unwrap().next().is_none(),
        "nothing written to the directory"
    );
}

#[test]
fn inspect_shows_a_carts_checkout_as_text_and_json() {
    let tmp = tempfile::tempdir().unwrap();
    assert!(run(tmp.path(), &["demo"]).status.success());
    let db = format!("sqlite:{}", tmp.path().join("cartflow-demo.db").display());
    let cart = SampleCart::InStock.id().to_string();
    let text = run(tmp.path(), &["inspect", "--cart", &cart, "--data", &db]);
    assert_eq!(text.status.code(), Some(0));
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(text.starts_with(&format!("cart {cart} (Closed)")), "{text}");
    assert!(text.contains("State Complete"), "{text}");
    assert!(text.contains("checkoutSessionAction 0a6"), "{text}");
    let json = run(
        tmp.path(),
        &["inspect", "--cart", &cart, "--data", &db, "--json"],
    );
    assert_eq!(json.status.code(), Some(0));
    let report: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(report["orders"][0]["Status"], "Activated");
    assert!(report["history"].as_array().unwrap().len() > 30);
    // No such cart: 1; a malformed ID: 2.
    let missing = SfId::from_number(KeyPrefix::WebCart, 987_654).to_string();
    assert_eq!(
        run(tmp.path(), &["inspect", "--cart", &missing, "--data", &db])
            .status
            .code(),
        Some(1)
    );
    assert_eq!(
        run(
            tmp.path(),
            &["inspect", "--cart", "nonsense", "--data", &db]
        )
        .status
        .code(),
        Some(2)
    );
}

#[test]
fn the_example_integrations_price_the_cart_and_a_bad_file_is_refused() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data");
    let data: DataSet =
        serde_json::from_slice(&fs::read(root.join("cartflow.json")).unwrap()).unwrap();
    let file = fs::read_to_string(root.join("integrations.json")).unwrap();
    // The example file is the sample configuration, as JSON.
    let config: cartflow::integrations::ProviderConfig = serde_json::from_str(&file).unwrap();
    assert_eq!(config, sample::provider_config());

    let dir = DataDir::new(&data);
    fs::write(dir.path().join("integrations.json"), &file).unwrap();
    let buyer = sample::buyer_id();
    let session = data
        .sessions
        .iter()
        .find(|s| s.web_cart_id == SampleCart::InStock.id())
        .unwrap()
        .id;
    let cart = json!({"cartId": SampleCart::InStock.id().to_string()});
    for (from, to, action) in [
        ("Inventory", "Confirm Price", "checkCartInventoryAction"),
        ("Confirm Price", "Calculate Promotions", "priceCart"),
    ] {
        dir.invoke(
            "updateCheckoutSessionStateAction",
            &json!({"checkoutSessionId": session.to_string(), "expCurrentState": from, "nextState": to}),
            &buyer,
            false,
        )
        .output("requestId");
        dir.invoke(action, &cart, &buyer, true)
            .output("backgroundOperationId");
    }
    let priced = dir
        .data()
        .carts
        .into_iter()
        .find(|c| c.id == SampleCart::InStock.id())
        .unwrap();
    // 2 + 1 tents at the negotiated 229.50, 5 ropes at 89.90.
    assert_eq!(
        priced
            .total_product_amount
            .map(|d| d.to_string())
            .as_deref(),
        Some("1138.00")
    );

    // A configuration that cannot work: refused before anything runs, exit 2.
    fs::write(
        dir.path().join("integrations.json"),
        r#"{"0ZE0000000000G9GAI": {"Tax": {"Rates": [{"CountryCode": "US", "Rate": "7"}]}}}"#,
    )
    .unwrap();
    let before = dir.data();
    let output = run(
        dir.path(),
        &[
            "invoke",
            "calcCartPromotionsAction",
            "--input",
            &cart.to_string(),
            "--as",
            &buyer.to_string(),
            "--data",
            ".",
        ],
    );
    assert_eq!(
        output.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stderr).contains("integrations.json"));
    assert_eq!(dir.data(), before);
}

// ---- import, export, --integrations, and the newcomer's papercuts ----

fn example_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/data")
        .join(name)
}

fn example_data() -> DataSet {
    serde_json::from_slice(&fs::read(example_file("cartflow.json")).unwrap()).unwrap()
}

fn stderr_of(output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

/// Runs `cartflow export --data <data>`; the data set it printed.
fn export(dir: &Path, data: &str) -> (String, DataSet) {
    let output = run(dir, &["export", "--data", data]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    let text = String::from_utf8(output.stdout).unwrap();
    let parsed = serde_json::from_str(&text).unwrap();
    (text, parsed)
}

/// Runs `cartflow import --data <data> --file <file>`.
fn import(dir: &Path, data: &str, file: &Path) -> Output {
    run(
        dir,
        &["import", "--data", data, "--file", file.to_str().unwrap()],
    )
}

/// A fresh database of each kind, by `--data` value: a `sqlite:` file (not there yet), a data
/// directory, and a PostgreSQL database when the harness has one.
fn empty_databases(tmp: &Path) -> (Vec<String>, Option<support::TestDb>) {
    let dir = tmp.join("datadir");
    fs::create_dir(&dir).unwrap();
    let mut targets = vec![
        format!("sqlite:{}", tmp.join("new.db").display()),
        dir.display().to_string(),
    ];
    let db = support::postgres();
    if let Some(db) = &db {
        targets.push(db.cli_url());
    }
    (targets, db)
}

#[test]
fn import_then_export_gives_back_the_data_set_on_sqlite_and_postgresql() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("prepared.json");
    fs::write(&file, serde_json::to_string_pretty(&prepared()).unwrap()).unwrap();
    let (targets, _db) = empty_databases(tmp.path());
    for data in &targets {
        let imported = import(tmp.path(), data, &file);
        assert_eq!(
            imported.status.code(),
            Some(0),
            "{data}: {}",
            stderr_of(&imported)
        );
        let (text, exported) = export(tmp.path(), data);
        assert_eq!(exported, as_seeded(prepared()), "{data}");
        // --file writes the same text stdout shows.
        let out = tmp.path().join("out.json");
        let written = run(
            tmp.path(),
            &["export", "--data", data, "--file", out.to_str().unwrap()],
        );
        assert_eq!(written.status.code(), Some(0), "{}", stderr_of(&written));
        assert_eq!(fs::read_to_string(&out).unwrap(), text, "{data}");

        // A second import is refused whole: the database is not empty.
        let again = import(tmp.path(), data, &file);
        assert_eq!(again.status.code(), Some(2), "{data}");
        assert!(stderr_of(&again).contains("is not empty"), "{data}");
        assert_eq!(export(tmp.path(), data).0, text, "{data}: unchanged");
    }
}

#[test]
fn a_database_that_ran_a_checkout_moves_whole_to_another_database() {
    let tmp = tempfile::tempdir().unwrap();
    assert!(run(tmp.path(), &["demo"]).status.success());
    let demo_db = tmp.path().join("cartflow-demo.db");
    let demo = format!("sqlite:{}", demo_db.display());
    let (text, data) = export(tmp.path(), &demo);
    assert!(!data.orders.is_empty() && !data.history.is_empty());
    let file = tmp.path().join("demo.json");
    fs::write(&file, &text).unwrap();

    let source = SqliteStore::open(&demo_db, Durability::Normal).unwrap();
    let (targets, db) = empty_databases(tmp.path());
    for target in &targets {
        let imported = import(tmp.path(), target, &file);
        assert_eq!(imported.status.code(), Some(0), "{}", stderr_of(&imported));
        assert_eq!(export(tmp.path(), target).0, text, "{target}");
    }
    // The other databases read the same records, cart by cart, as the engine reads them.
    let mut copies: Vec<Box<dyn cartflow::Store>> = vec![Box::new(
        SqliteStore::open(tmp.path().join("new.db"), Durability::Normal).unwrap(),
    )];
    if let Some(db) = &db {
        copies.push(Box::new(
            cartflow::store::PostgresStore::connect(db.url()).unwrap(),
        ));
    }
    let by_id = |mut ids: Vec<SfId>| {
        ids.sort();
        ids
    };
    for copy in &copies {
        for cart in &data.carts {
            let id = &cart.id;
            assert_eq!(copy.cart(id).unwrap(), source.cart(id).unwrap());
            assert_eq!(copy.cart_items(id).unwrap(), source.cart_items(id).unwrap());
            assert_eq!(copy.history(id).unwrap(), source.history(id).unwrap());
            assert_eq!(
                by_id(copy.sessions_of(id).unwrap().iter().map(|s| s.id).collect()),
                by_id(
                    source
                        .sessions_of(id)
                        .unwrap()
                        .iter()
                        .map(|s| s.id)
                        .collect()
                )
            );
            for session in source.sessions_of(id).unwrap() {
                assert_eq!(copy.session(&session.id).unwrap(), Some(session));
            }
            for op in source.operations_of(id).unwrap() {
                assert_eq!(copy.operation(&op.id).unwrap(), Some(op));
            }
            for output in source.validation_outputs(id).unwrap() {
                assert_eq!(copy.validation_output(&output.id).unwrap(), Some(output));
            }
        }
        for order in &data.orders {
            assert_eq!(
                copy.order(&order.id).unwrap(),
                source.order(&order.id).unwrap()
            );
        }
        for user in &data.users {
            assert_eq!(copy.user(&user.id).unwrap(), Some(user.clone()));
        }
    }
}

#[test]
fn a_failed_import_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    // A malformed file: refused before any database is opened or created.
    let bad = tmp.path().join("bad.json");
    fs::write(&bad, "{\"stores\": [").unwrap();
    let new_db = tmp.path().join("new.db");
    let output = import(tmp.path(), &format!("sqlite:{}", new_db.display()), &bad);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr_of(&output).contains("bad.json"));
    assert!(!new_db.exists(), "no database was created");

    // A data set the database refuses halfway (PostgreSQL stores no NUL character in text;
    // the last cart line carries one): the transaction is rolled back, nothing is left.
    let Some(db) = support::postgres() else {
        return;
    };
    let mut data = prepared();
    data.items.last_mut().unwrap().sku = Some("TENT\u{0}4P".into());
    let file = tmp.path().join("nul.json");
    fs::write(&file, serde_json::to_string(&data).unwrap()).unwrap();
    let output = import(tmp.path(), &db.cli_url(), &file);
    assert_eq!(output.status.code(), Some(2), "{}", stderr_of(&output));
    let (_, left) = export(tmp.path(), &db.cli_url());
    assert_eq!(left, DataSet::default(), "nothing was committed");
}

#[test]
fn a_file_given_to_data_gets_a_hint_at_what_was_meant() {
    let dir = DataDir::new(&prepared());
    let buyer = sample::buyer_id();
    dir.invoke(
        "checkoutSessionAction",
        &cart_input(SampleCart::ShortStock.id()),
        &buyer,
        false,
    );
    let before = dir.data();
    let as_file = |data: &Path| {
        let output = run(
            dir.path(),
            &[
                "invoke",
                "checkCartInventoryAction",
                "--input",
                &cart_input(SampleCart::InStock.id()).to_string(),
                "--as",
                &buyer.to_string(),
                "--data",
                data.to_str().unwrap(),
            ],
        );
        assert_eq!(output.status.code(), Some(2));
        stderr_of(&output)
    };
    let db = dir.db_file();
    let stderr = as_file(&db);
    assert!(
        stderr.contains(&format!("write --data sqlite:{}", db.display())),
        "{stderr}"
    );
    let stderr = as_file(&dir.seed_file());
    assert!(
        stderr.contains(&format!("--data {}", dir.path().display())),
        "{stderr}"
    );
    assert!(dir.data() == before, "nothing changed");
}

#[test]
fn a_malformed_as_id_and_an_unknown_user_get_different_messages() {
    let dir = DataDir::new(&prepared());
    let invoke_as = |actor: &str| {
        let output = run(
            dir.path(),
            &[
                "invoke",
                "checkoutSessionAction",
                "--input",
                &cart_input(SampleCart::ShortStock.id()).to_string(),
                "--as",
                actor,
                "--data",
                ".",
            ],
        );
        assert_eq!(output.status.code(), Some(2), "--as {actor}");
        assert!(output.stdout.is_empty());
        stderr_of(&output)
    };
    let malformed = invoke_as("nonsense");
    assert!(
        malformed.contains("--as \"nonsense\" is not a User Id"),
        "{malformed}"
    );
    let a_cart = invoke_as(&SampleCart::InStock.id().to_string());
    assert!(a_cart.contains("is not a User Id"), "{a_cart}");
    assert!(!dir.db_file().exists(), "a malformed Id opens nothing");
    let unknown_id = SfId::from_number(KeyPrefix::User, 424_242);
    let unknown = invoke_as(&unknown_id.to_string());
    assert!(
        unknown.contains(&format!("holds no user {unknown_id}")),
        "{unknown}"
    );
    assert_ne!(malformed, unknown);
    // Nothing ran: the database holds the seed as it was.
    assert_eq!(dir.data(), as_seeded(prepared()));
}

#[test]
fn a_postgresql_connection_error_keeps_its_cause() {
    let tmp = tempfile::tempdir().unwrap();
    let missing_socket = format!(
        "postgresql:///cartflow?host={}",
        tmp.path().join("no-such-dir").display()
    );
    for (url, cause) in [
        (
            "postgres://cartflow:secret@127.0.0.1:1/cartflow".to_owned(),
            "Connection refused",
        ),
        (missing_socket, "No such file or directory"),
    ] {
        let output = run(tmp.path(), &["worker", "--data", &url, "--exit-when-idle"]);
        assert_eq!(output.status.code(), Some(2), "{url}");
        let stderr = stderr_of(&output);
        assert!(stderr.contains("error connecting to server"), "{stderr}");
        assert!(stderr.contains(cause), "{url}: {stderr}");
        assert!(!stderr.contains("secret"), "{stderr}");
    }
}

#[test]
fn a_misspelled_action_gets_the_nearest_name_and_touches_no_database() {
    let dir = DataDir::new(&prepared());
    for (typed, meant) in [
        ("checkCartInventroyAction", "checkCartInventoryAction"),
        ("pricecart", "priceCart"),
        ("checkoutSession", "checkoutSessionAction"),
    ] {
        let result = dir.invoke(
            typed,
            &cart_input(SampleCart::InStock.id()),
            &sample::buyer_id(),
            true,
        );
        assert_eq!(result.code, 2, "{typed}");
        assert_eq!(result.stdout, Value::Null);
        assert!(
            result.stderr.contains(&format!("did you mean {meant}?")),
            "{typed}: {}",
            result.stderr
        );
        assert_eq!(names(dir.path()), ["cartflow.json"], "{typed}: no database");
    }
    // A name far from every action gets the list, and no guess.
    let result = dir.invoke(
        "zzz",
        &cart_input(SampleCart::InStock.id()),
        &sample::buyer_id(),
        false,
    );
    assert_eq!(result.code, 2);
    assert!(!result.stderr.contains("did you mean"), "{}", result.stderr);
    assert!(
        result.stderr.contains("cancelCartAsyncOperation"),
        "{}",
        result.stderr
    );
}

/// The stores a command's stderr names as having no payment provider.
fn unpaid_stores(stderr: &str) -> Vec<String> {
    let mut named: Vec<String> = stderr
        .lines()
        .filter(|line| line.contains("has no payment provider mapped"))
        .filter_map(|line| line.split("WebStore ").nth(1))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    named.sort();
    named
}

#[test]
fn each_store_without_a_payment_provider_is_named_at_start() {
    let data = example_data();
    let dir = DataDir::new(&data);
    let both = ["0ZE0000000000G9GAI", "0ZE0000000000GAGAY"];
    let example = example_file("integrations.json");
    // A file that gives the second store the first one's gateway too.
    let mut config: cartflow::integrations::ProviderConfig =
        serde_json::from_slice(&fs::read(&example).unwrap()).unwrap();
    let gateway = config.values().next().unwrap().payment.clone();
    config.entry(both[1].parse().unwrap()).or_default().payment = gateway;
    let everywhere = dir.path().join("paid.json");
    fs::write(&everywhere, serde_json::to_string(&config).unwrap()).unwrap();

    let cases: [(Option<&Path>, &[&str]); 3] = [
        (None, &both),
        (Some(&example), &both[1..]),
        (Some(&everywhere), &[]),
    ];
    let input = cart_input(SampleCart::Reorder.id()).to_string();
    let buyer = sample::buyer_id().to_string();
    for (file, expected) in cases {
        let mut invoke = vec![
            "invoke",
            "checkoutSessionAction",
            "--input",
            &input,
            "--as",
            &buyer,
            "--data",
            ".",
        ];
        let mut worker = vec!["worker", "--data", ".", "--exit-when-idle"];
        if let Some(file) = file {
            for args in [&mut invoke, &mut worker] {
                args.extend(["--integrations", file.to_str().unwrap()]);
            }
        }
        for args in [invoke, worker] {
            let output = run(dir.path(), &args);
            let stderr = stderr_of(&output);
            assert!(output.status.code() != Some(2), "{args:?}: {stderr}");
            assert_eq!(unpaid_stores(&stderr), expected, "{args:?}: {stderr}");
        }
    }
}

#[test]
fn integrations_configure_providers_on_postgresql_and_a_bad_file_touches_nothing() {
    let data = example_data();
    let session = data
        .sessions
        .iter()
        .find(|s| s.web_cart_id == SampleCart::InStock.id())
        .unwrap()
        .id
        .to_string();
    let example = example_file("integrations.json");
    let example = example.to_str().unwrap();
    let buyer = sample::buyer_id().to_string();
    let cart = cart_input(SampleCart::InStock.id()).to_string();

    // A bad file is refused before the store is opened: a seeded directory gets no database,
    // and the flag wins over the directory's own integrations.json.
    let dir = DataDir::new(&data);
    let bad = dir.path().join("bad.json");
    fs::write(
        &bad,
        r#"{"0ZE0000000000G9GAI": {"Tax": {"Rates": [{"CountryCode": "US", "Rate": "7"}]}}}"#,
    )
    .unwrap();
    let output = run(
        dir.path(),
        &[
            "invoke",
            "priceCart",
            "--input",
            &cart,
            "--as",
            &buyer,
            "--data",
            ".",
            "--integrations",
            bad.to_str().unwrap(),
        ],
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr_of(&output).contains("bad.json"));
    assert_eq!(
        names(dir.path()),
        ["bad.json", "cartflow.json"],
        "no database"
    );
    fs::copy(&bad, dir.path().join("integrations.json")).unwrap();
    let lock = json!({"checkoutSessionId": session, "expCurrentState": "Inventory", "nextState": "Confirm Price"}).to_string();
    let output = run(
        dir.path(),
        &[
            "invoke",
            "updateCheckoutSessionStateAction",
            "--input",
            &lock,
            "--as",
            &buyer,
            "--data",
            ".",
            "--integrations",
            example,
        ],
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));

    let Some(db) = support::postgres() else {
        return;
    };
    let url = db.cli_url();
    let imported = import(dir.path(), &url, &example_file("cartflow.json"));
    assert_eq!(imported.status.code(), Some(0), "{}", stderr_of(&imported));
    for (from, to, action) in [
        ("Inventory", "Confirm Price", "checkCartInventoryAction"),
        ("Confirm Price", "Calculate Promotions", "priceCart"),
    ] {
        let lock = json!({"checkoutSessionId": session, "expCurrentState": from, "nextState": to})
            .to_string();
        for (action, input, wait) in [
            ("updateCheckoutSessionStateAction", &lock, false),
            (action, &cart, true),
        ] {
            let mut args = vec![
                "invoke",
                action,
                "--input",
                input,
                "--as",
                &buyer,
                "--data",
                &url,
                "--integrations",
                example,
            ];
            if wait {
                args.push("--wait");
            }
            let output = run(dir.path(), &args);
            assert_eq!(
                output.status.code(),
                Some(0),
                "{action}: {}",
                stderr_of(&output)
            );
        }
    }
    let store = cartflow::store::PostgresStore::connect(db.url()).unwrap();
    let priced = cartflow::Store::cart(&store, &SampleCart::InStock.id())
        .unwrap()
        .unwrap();
    // 2 + 1 tents at the negotiated 229.50, 5 ropes at 89.90: the example price book.
    assert_eq!(
        priced
            .total_product_amount
            .map(|d| d.to_string())
            .as_deref(),
        Some("1138.00")
    );
}

#[test]
fn the_demo_takes_an_integrations_file_and_refuses_a_bad_one_before_writing() {
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("bad.json");
    fs::write(&bad, "{\"0ZE0000000000G9GAI\": {\"Price\": 3}}").unwrap();
    let output = run(
        tmp.path(),
        &["demo", "--integrations", bad.to_str().unwrap()],
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr_of(&output).contains("bad.json"));
    assert_eq!(names(tmp.path()), ["bad.json"], "no demo database");

    let example = example_file("integrations.json");
    let output = run(
        tmp.path(),
        &["demo", "--integrations", example.to_str().unwrap()],
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    // Without a payment gateway the story breaks at the payment step, as it must.
    let unpaid = tmp.path().join("unpaid.json");
    let mut config: cartflow::integrations::ProviderConfig =
        serde_json::from_slice(&fs::read(&example).unwrap()).unwrap();
    for providers in config.values_mut() {
        providers.payment = None;
    }
    fs::write(&unpaid, serde_json::to_string(&config).unwrap()).unwrap();
    let output = run(
        tmp.path(),
        &["demo", "--integrations", unpaid.to_str().unwrap()],
    );
    assert_eq!(output.status.code(), Some(1), "{}", stderr_of(&output));
}
