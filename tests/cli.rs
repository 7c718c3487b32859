//! The `cartflow` binary, run as a user would: the demo, the diagram, and `invoke` against a
//! data directory in a temporary folder.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use cartflow::model::{
    CartCheckoutSession, CartStatus, KeyPrefix, OperationStatus, SessionState, SfId,
};
use cartflow::sample::{self, SampleCart};
use cartflow::store::DataSet;
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
    let mut data = sample::dataset();
    let cart = data
        .carts
        .iter_mut()
        .find(|c| c.id == SampleCart::InStock.id())
        .unwrap();
    cart.status = CartStatus::Checkout;
    data.sessions.push(CartCheckoutSession {
        id: inventory_session_id(),
        web_cart_id: SampleCart::InStock.id(),
        state: Some(SessionState::Inventory),
        next_state: None,
        is_processing: false,
        is_error: false,
        is_archived: false,
        background_operation_id: None,
        order_id: None,
        version: 0,
    });
    data
}

/// A temporary data directory holding `data` (written compactly, so any rewrite by the
/// binary, which pretty-prints, shows in the bytes).
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

    fn file(&self) -> PathBuf {
        self.path().join("cartflow.json")
    }

    fn bytes(&self) -> Vec<u8> {
        fs::read(self.file()).unwrap()
    }

    fn data(&self) -> DataSet {
        serde_json::from_slice(&self.bytes()).unwrap()
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
        let mut args = vec![
            "invoke".to_owned(),
            action.to_owned(),
            "--input".to_owned(),
            input.to_string(),
            "--as".to_owned(),
            actor.to_string(),
            "--data".to_owned(),
            self.path().display().to_string(),
        ];
        if wait {
            args.push("--wait".to_owned());
        }
        Invoked::from(run(self.path(), &args))
    }
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
    // Nothing is written to disk.
    assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 0);
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

    let refusal = |row: &str, input: Value, actor: SfId, code: &str, status: u16| {
        let before = dir.bytes();
        let result = dir.invoke(check, &input, &actor, false);
        assert_eq!(result.code, 1, "{row}: {}", result.stdout);
        assert_eq!(result.stdout["actionName"], check, "{row}");
        assert_eq!(result.stdout["isSuccess"], false, "{row}");
        assert_eq!(result.stdout["outputValues"], Value::Null, "{row}");
        assert_eq!(result.stdout["errors"][0]["statusCode"], code, "{row}");
        assert_eq!(result.stdout["httpStatus"], status, "{row}");
        assert!(
            dir.bytes() == before,
            "{row}: a refused call rewrote the data file"
        );
    };

    // Invalid cartId: malformed, and well-formed naming no cart.
    refusal(
        "invalid cartId",
        json!({"cartId": "not-a-cart-id"}),
        buyer,
        "UNKNOWN_EXCEPTION",
        500,
    );
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
        sample::stranger_id(),
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
    // call again (a double click). Each accepted call is saved for the next process to see.
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

    // Saves go through a temporary file that is renamed away: none is left behind.
    let names: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["cartflow.json"]);
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
fn bad_data_or_usage_exits_2_and_leaves_the_file_alone() {
    let buyer = sample::buyer_id();
    let input = cart_input(SampleCart::InStock.id());
    let cases: [(&str, String); 4] = [
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
    ];
    for (what, text) in cases {
        let dir = DataDir::new(&DataSet::default());
        fs::write(dir.file(), &text).unwrap();
        let result = dir.invoke("checkCartInventoryAction", &input, &buyer, true);
        assert_eq!(result.code, 2, "{what}: {}", result.stderr);
        assert!(
            result.stderr.contains("cartflow.json"),
            "{what}: {}",
            result.stderr
        );
        assert_eq!(result.stdout, Value::Null, "{what}: nothing on stdout");
        assert_eq!(fs::read_to_string(dir.file()).unwrap(), text, "{what}");
    }

    // A missing directory, a directory without a data file, malformed --input.
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nowhere");
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
            missing.to_str().unwrap(),
        ],
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("does not exist"));
    assert!(!missing.exists());

    let empty = DataDir::new(&DataSet::default());
    fs::remove_file(empty.file()).unwrap();
    let result = empty.invoke("checkCartInventoryAction", &input, &buyer, false);
    assert_eq!(result.code, 2);
    assert!(!empty.file().exists(), "no data file is created");

    let dir = DataDir::new(&prepared());
    let before = dir.bytes();
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
    assert!(dir.bytes() == before);

    // A required argument left out is a clap usage error: exit 2 too.
    let output = run(dir.path(), &["invoke", "checkCartInventoryAction"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(dir.bytes() == before);
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
    dir.invoke(
        "checkCartInventoryAction",
        &json!({"cartId": "0a6000000000001"}),
        &buyer,
        true,
    )
    .output("backgroundOperationId");
    let session = dir.session(&"2z9000000000001".parse().unwrap());
    assert_eq!(session.state, Some(SessionState::ConfirmPrice));
    // The rewrite spells IDs in their 18-character form.
    let text = String::from_utf8(dir.bytes()).unwrap();
    assert!(text.contains(&format!("\"{buyer}\"")));
    assert_eq!(buyer.to_string().len(), 18);
}
