//! One buyer: a Salesforce REST client that walks a cart through a template's checkout step
//! by step, as `docs/http.md` describes it, timing every call. The steps, their order and
//! their actions come from the template; the buyer only supplies each screen's input.

use std::thread;
use std::time::{Duration, Instant};

use cartflow::machine::{Action, PAYMENT_OPERATION, StepKind, Template};
use cartflow::model::SessionState;
use cartflow::sample;
use serde_json::{Value, json};

/// How long the client waits for one answer.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a background step may keep its session processing before the checkout is
/// counted as failed with [`STEP_TIMEOUT`].
pub const STEP_BOUND: Duration = Duration::from_secs(60);

/// The failure code of a step whose session was still processing after [`STEP_BOUND`].
pub const STEP_TIMEOUT: &str = "STEP_TIMEOUT";

/// The failure code of a call the server never answered (refused, reset, timed out).
pub const NO_ANSWER: &str = "NO_ANSWER";

/// The failure code of a template the walk cannot follow (no entry step, a State with no
/// step).
pub const NO_STEP: &str = "NO_STEP";

/// The failure code of a background step that left its session in Error.
pub const SESSION_ERROR: &str = "SESSION_ERROR";

/// The pause between two reads of a processing session.
const POLL_PAUSE: Duration = Duration::from_millis(5);

/// One timed call: what it was (`POST checkCartInventoryAction`, `PATCH WebCart`, ...) and how
/// long its answer took.
#[derive(Debug, Clone)]
pub struct Call {
    /// The method and the action or object.
    pub label: String,
    /// From sending the request to reading the whole answer.
    pub took: Duration,
}

/// Why a checkout stopped: a code (the Salesforce `errorCode`, or one of this module's
/// constants) and the call that got it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The error code.
    pub code: String,
    /// The call, as a [`Call`] label.
    pub during: String,
}

/// An answer: its status and its JSON body (`Null` when empty or not JSON).
struct Reply {
    status: u16,
    body: Value,
}

impl Reply {
    /// The Salesforce error code of an error answer: a record route's `errorCode`, or an
    /// action element's first error's `statusCode`; else `HTTP_<status>`.
    fn error_code(&self) -> String {
        let first = &self.body[0];
        first["errorCode"]
            .as_str()
            .or_else(|| first["errors"][0]["statusCode"].as_str())
            .map_or_else(|| format!("HTTP_{}", self.status), str::to_owned)
    }
}

/// The server as a REST client sees it: its root, an API version's path and a bearer token.
#[derive(Debug, Clone)]
pub struct Client {
    agent: ureq::Agent,
    /// `http://host:port`.
    root: String,
    /// `/services/data/vNN.N`.
    api: String,
    authorization: String,
}

impl Client {
    /// A client of the API at `root` + `api` with `token`.
    pub fn new(root: String, api: String, token: &str) -> Client {
        Client {
            agent: agent(),
            root,
            api,
            authorization: format!("Bearer {token}"),
        }
    }

    /// The same client on a connection of its own.
    pub fn with_own_connection(&self) -> Client {
        Client {
            agent: agent(),
            ..self.clone()
        }
    }

    /// The API version's path, `/services/data/vNN.N`.
    pub fn api(&self) -> &str {
        &self.api
    }

    /// `GET root + path` (a path from the root, as `nextRecordsUrl` gives them), untimed: for
    /// setting up, not for the figures.
    pub fn get(&self, path: &str) -> Result<Value, Failure> {
        let label = format!("GET {path}");
        let reply = self.send_to(&mut Vec::new(), &label, "GET", path.to_owned(), None)?;
        if reply.status == 200 {
            Ok(reply.body)
        } else {
            Err(failure(&reply, &label))
        }
    }

    /// Sends one request to a path under the API version and times it into `calls`.
    fn send(
        &self,
        calls: &mut Vec<Call>,
        label: &str,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Reply, Failure> {
        let path = format!("{}{path}", self.api);
        self.send_to(calls, label, method, path, body)
    }

    /// Sends one request to a path from the root and times it into `calls`.
    fn send_to(
        &self,
        calls: &mut Vec<Call>,
        label: &str,
        method: &str,
        path: String,
        body: Option<&Value>,
    ) -> Result<Reply, Failure> {
        let url = format!("{}{path}", self.root);
        let started = Instant::now();
        let answer = match (method, body) {
            ("GET", _) => self
                .agent
                .get(&url)
                .header("Authorization", &self.authorization)
                .call(),
            ("PATCH", Some(body)) => self
                .agent
                .patch(&url)
                .header("Authorization", &self.authorization)
                .header("Content-Type", "application/json")
                .send(body.to_string()),
            (_, body) => self
                .agent
                .post(&url)
                .header("Authorization", &self.authorization)
                .header("Content-Type", "application/json")
                .send(body.map(Value::to_string).unwrap_or_default()),
        };
        let reply = read(answer).map_err(|()| Failure {
            code: NO_ANSWER.into(),
            during: label.to_owned(),
        })?;
        calls.push(Call {
            label: label.to_owned(),
            took: started.elapsed(),
        });
        Ok(reply)
    }
}

/// The agent every buyer shares the settings of: statuses are answers, not errors.
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(CALL_TIMEOUT))
        .build()
        .new_agent()
}

/// Status and JSON body of an answer; `Err` when there was none.
fn read(answer: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Result<Reply, ()> {
    let response = answer.map_err(|_| ())?;
    let status = response.status().as_u16();
    let text = response.into_body().read_to_string().map_err(|_| ())?;
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Ok(Reply { status, body })
}

fn no_step(during: &str) -> Failure {
    Failure {
        code: NO_STEP.into(),
        during: during.to_owned(),
    }
}

fn failure(reply: &Reply, during: &str) -> Failure {
    Failure {
        code: reply.error_code(),
        during: during.to_owned(),
    }
}

/// One checkout of one cart: every call it made, timed, and how it ended.
#[derive(Debug)]
pub struct Checkout {
    /// The calls, in order.
    pub calls: Vec<Call>,
    /// From the first call's start to the last call's end.
    pub took: Duration,
    /// `Err` when the checkout stopped before the order was activated and the cart closed.
    pub outcome: Result<(), Failure>,
}

/// Walks `cart` from checkout start to `template`'s terminal state.
pub fn checkout(client: &Client, template: &Template, cart: &str) -> Checkout {
    let mut walk = Walk {
        client,
        template,
        cart,
        calls: Vec::new(),
    };
    let started = Instant::now();
    let outcome = walk.all_steps();
    Checkout {
        calls: walk.calls,
        took: started.elapsed(),
        outcome,
    }
}

/// A checkout in progress.
struct Walk<'a> {
    client: &'a Client,
    template: &'a Template,
    cart: &'a str,
    calls: Vec<Call>,
}

impl Walk<'_> {
    fn all_steps(&mut self) -> Result<(), Failure> {
        let session = self.action("checkoutSessionAction", json!({ "cartId": self.cart }))?;
        let session = session["requestId"].as_str().unwrap_or_default().to_owned();
        let mut state = self
            .template
            .entry()
            .ok_or_else(|| no_step("no entry step"))?;
        // Each turn moves one step forward, so a walk takes at most one turn per step.
        for _ in 0..self.template.steps.len() {
            let step = self
                .template
                .step(state)
                .ok_or_else(|| no_step(state.as_str()))?;
            let Some(next) = step.next else {
                return Ok(());
            };
            match step.kind {
                StepKind::Async(_) | StepKind::Payment | StepKind::Custom(_) => {
                    self.async_step(&session, state, next, step.kind)?;
                }
                StepKind::Entry | StepKind::Screen | StepKind::Terminal => {
                    self.screen_input(state)?;
                    self.screen(&session, next.as_str())?;
                }
            }
            state = next;
        }
        Err(no_step("a step the walk never reached"))
    }

    /// What the buyer enters on the screen at `state`, written onto the cart.
    fn screen_input(&mut self, state: SessionState) -> Result<(), Failure> {
        let fields = match state {
            SessionState::ShippingAddress => json!({ "DeliverTo": sample::denver() }),
            SessionState::DeliveryMethod => json!({ "DeliveryMethodId": self.cheapest_method()? }),
            SessionState::PaymentAndBillingAddress => {
                json!({ "PaymentToken": sample::GOOD_TOKEN })
            }
            _ => return Ok(()),
        };
        self.write_cart(fields)
    }

    /// Invokes a standard action with one input; its element's `outputValues`.
    fn action(&mut self, name: &str, input: Value) -> Result<Value, Failure> {
        self.invoke(
            &format!("POST {name}"),
            &format!("/actions/standard/{name}"),
            input,
        )
    }

    /// Invokes the action at `path` with one input; its element's `outputValues`.
    fn invoke(&mut self, label: &str, path: &str, input: Value) -> Result<Value, Failure> {
        let body = json!({ "inputs": [input] });
        let reply = self
            .client
            .send(&mut self.calls, label, "POST", path, Some(&body))?;
        let element = &reply.body[0];
        if reply.status == 200 && element["isSuccess"] == true {
            Ok(element["outputValues"].clone())
        } else {
            Err(failure(&reply, label))
        }
    }

    /// `PATCH`es a record; anything but 204 stops the checkout.
    fn patch(&mut self, object: &str, id: &str, fields: &Value) -> Result<(), Failure> {
        let label = format!("PATCH {object}");
        let path = format!("/sobjects/{object}/{id}");
        let reply = self
            .client
            .send(&mut self.calls, &label, "PATCH", &path, Some(fields))?;
        if reply.status == 204 {
            Ok(())
        } else {
            Err(failure(&reply, &label))
        }
    }

    /// Reads a record.
    fn record(&mut self, object: &str, id: &str) -> Result<Value, Failure> {
        let label = format!("GET {object}");
        let path = format!("/sobjects/{object}/{id}");
        let reply = self
            .client
            .send(&mut self.calls, &label, "GET", &path, None)?;
        if reply.status == 200 {
            Ok(reply.body)
        } else {
            Err(failure(&reply, &label))
        }
    }

    /// A screen step: the session's State moves on.
    fn screen(&mut self, session: &str, state: &str) -> Result<(), Failure> {
        self.patch("CartCheckoutSession", session, &json!({ "State": state }))
    }

    /// A screen's input written onto the cart.
    fn write_cart(&mut self, fields: Value) -> Result<(), Failure> {
        let cart = self.cart.to_owned();
        self.patch("WebCart", &cart, &fields)
    }

    /// An async step: lock it, invoke its action, read the session until it settles on `to`.
    fn async_step(
        &mut self,
        session: &str,
        from: SessionState,
        to: SessionState,
        kind: StepKind,
    ) -> Result<(), Failure> {
        self.action(
            "updateCheckoutSessionStateAction",
            json!({
                "checkoutSessionId": session,
                "expCurrentState": from.as_str(),
                "nextState": to.as_str(),
            }),
        )?;
        let mut input = json!({ "cartId": self.cart });
        let path = match kind {
            StepKind::Async(action) => {
                if action == Action::ActivateOrder {
                    input["orderStatus"] = json!("Activated");
                }
                format!("/actions/standard/{}", action.api_name())
            }
            StepKind::Custom(action) => format!("/actions/custom/apex/{}", action.as_str()),
            _ => format!("/actions/standard/{PAYMENT_OPERATION}"),
        };
        let label = format!("POST {}", path.rsplit('/').next().unwrap_or_default());
        self.invoke(&label, &path, input)?;
        self.settle(session, &label, to.as_str())
    }

    /// Reads the session until it is no longer processing; it must then be at `to`.
    fn settle(&mut self, session: &str, during: &str, to: &str) -> Result<(), Failure> {
        let started = Instant::now();
        loop {
            let record = self.record("CartCheckoutSession", session)?;
            if record["IsProcessing"] == false {
                return if record["State"] == to && record["IsError"] != true {
                    Ok(())
                } else {
                    Err(Failure {
                        code: SESSION_ERROR.into(),
                        during: during.to_owned(),
                    })
                };
            }
            if started.elapsed() > STEP_BOUND {
                return Err(Failure {
                    code: STEP_TIMEOUT.into(),
                    during: during.to_owned(),
                });
            }
            thread::sleep(POLL_PAUSE);
        }
    }

    /// The cheapest delivery option the shipment step offered the cart.
    fn cheapest_method(&mut self) -> Result<String, Failure> {
        let cart = self.cart.to_owned();
        let record = self.record("WebCart", &cart)?;
        let options = record["DeliveryOptions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        options
            .iter()
            .filter_map(|option| {
                let amount: rust_decimal::Decimal = option["Amount"].as_str()?.parse().ok()?;
                Some((amount, option["DeliveryMethodId"].as_str()?.to_owned()))
            })
            .min()
            .map(|(_, method)| method)
            .ok_or_else(|| Failure {
                code: "NO_DELIVERY_OPTION".into(),
                during: "GET WebCart".into(),
            })
    }
}
