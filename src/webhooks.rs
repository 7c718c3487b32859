//! Webhooks: the store's events, POSTed as signed JSON to HTTP endpoints.
//!
//! A [`Webhooks`] file names the endpoints and which events each wants. A
//! [`WebhookDeliverer`] follows the store's events for one hook from the cursor the store
//! keeps for it ([`Store::webhook_cursor`]): each event the hook's filters let through is
//! POSTed, in commit order, until the endpoint answers a 2xx, and the cursor moves past it in
//! the same transaction that logs the delivery ([`Store::advance_webhook`]). Every other
//! answer (or none) is logged as failed and retried after a backoff, without end: delivery
//! is at least once, in order, and nothing is dropped. [`WebhookDeliverer::spawn`] runs one
//! thread per hook, so that one endpoint's outage holds up no other. `docs/webhooks.md`
//! describes the file, the requests and their signatures.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::Value;

use crate::error::StoreError;
use crate::events::{
    Delivery, DeliveryOutcome, EventPosition, MAX_EVENTS_PER_READ, PublishedEvent,
};
use crate::integrations::{SIGNATURE_HEADER, TIMESTAMP_HEADER, sign};
use crate::machine::Machine;
use crate::model::{KeyPrefix, SfId};
use crate::store::Store;

/// The header carrying the event's position, the same on every attempt: a receiver drops an
/// event whose ID it has already handled.
pub const EVENT_ID_HEADER: &str = "X-Cartflow-Event-Id";

/// How long one attempt may take when the file gives no `timeout_ms`.
pub const DEFAULT_TIMEOUT_MS: u64 = 5_000;

/// The longest `timeout_ms` a hook may give (10 minutes).
pub const MAX_TIMEOUT_MS: u64 = 600_000;

/// The first retry waits up to this long; each further one up to twice as long as the last.
pub const BASE_BACKOFF: Duration = Duration::from_millis(100);

/// The longest a retry waits when the options give no other cap.
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(60);

/// How many carts' WebStores a deliverer remembers before it starts again from none.
const MAX_CACHED_CARTS: usize = 10_000;

/// The most of an answer's body read (and thrown away), so that a connection can be reused.
const MAX_ANSWER_BYTES: u64 = 64 << 10;

/// Why webhooks cannot be loaded or delivered. Each variant has one meaning.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookError {
    /// The webhooks file could not be read.
    #[error("cannot read {0}: {1}")]
    Read(PathBuf, std::io::Error),
    /// The text is not a webhooks file: not JSON, a field unknown or missing, a value of the
    /// wrong type.
    #[error("not a valid webhooks file: {0}")]
    Malformed(String),
    /// The hook at this position of the list (1 for the first) has a blank name.
    #[error("webhook #{0} has a blank name")]
    BlankName(usize),
    /// Two hooks have this name.
    #[error("webhook {0:?} is named twice: each hook needs a name of its own")]
    DuplicateName(String),
    /// The hook's URL is not `http://host[:port][/path]`.
    #[error("webhook {hook:?}: the url {url:?} is not http://host[:port][/path]")]
    BadUrl {
        /// The hook.
        hook: String,
        /// Its URL.
        url: String,
    },
    /// The hook's URL is `https://`, which this build cannot speak (it has no TLS).
    #[error(
        "webhook {hook:?}: the url {url:?} is https, and cartflow speaks plain HTTP only: \
         deliver to an http:// endpoint or through a TLS proxy"
    )]
    Https {
        /// The hook.
        hook: String,
        /// Its URL.
        url: String,
    },
    /// The hook's secret is blank.
    #[error("webhook {0:?} has a blank secret")]
    BlankSecret(String),
    /// The hook filters on a machine that does not exist.
    #[error("webhook {hook:?}: unknown machine {machine:?} (expected Session, Cart or Operation)")]
    UnknownMachine {
        /// The hook.
        hook: String,
        /// The machine it names.
        machine: String,
    },
    /// The hook's store is not a WebStore ID.
    #[error("webhook {hook:?}: the store {store:?} is not a WebStore ID: {reason}")]
    BadStore {
        /// The hook.
        hook: String,
        /// The store it names.
        store: String,
        /// Why it is not a WebStore ID.
        reason: String,
    },
    /// The hook's timeout is 0 or above [`MAX_TIMEOUT_MS`].
    #[error("webhook {hook:?}: timeout_ms is {timeout_ms}; it must be from 1 to {MAX_TIMEOUT_MS}")]
    BadTimeout {
        /// The hook.
        hook: String,
        /// Its timeout.
        timeout_ms: u64,
    },
    /// The store failed while reading events or recording a delivery.
    #[error("the store failed: {0}")]
    Store(#[from] StoreError),
    /// A delivery thread could not be started.
    #[error("cannot start a delivery thread: {0}")]
    Spawn(std::io::Error),
}

/// One endpoint and the events it wants, checked ([`Webhooks::from_json`]).
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookConfig {
    /// The hook's name: unique in its file, the key of its cursor and delivery log in the
    /// store, and sent as `"Hook"` in each body. Renaming a hook starts it afresh.
    pub name: String,
    /// Where the events are POSTed: `http://host[:port][/path]`.
    pub url: String,
    /// The key each request is signed with (HMAC-SHA256); the receiver checks with it.
    pub secret: String,
    /// The event labels sent (a history entry's `Event`, such as
    /// `checkCartInventoryAction` or `claim`); empty sends every event.
    pub events: Vec<String>,
    /// The machines whose moves are sent; empty sends every machine's.
    pub machines: Vec<Machine>,
    /// Only the events of carts of this WebStore; `None` sends every store's.
    pub store: Option<SfId>,
    /// How long one attempt may take, connecting included, in milliseconds.
    pub timeout_ms: u64,
}

impl fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The secret stays out of logs.
        f.debug_struct("WebhookConfig")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("events", &self.events)
            .field("machines", &self.machines)
            .field("store", &self.store)
            .field("timeout_ms", &self.timeout_ms)
            .finish_non_exhaustive()
    }
}

impl WebhookConfig {
    /// Whether the hook wants `event` of a cart in WebStore `store` (`None` when the cart is
    /// not found).
    pub fn wants(&self, event: &PublishedEvent, store: Option<&SfId>) -> bool {
        let entry = &event.entry;
        let label = entry.event.to_string();
        (self.events.is_empty() || self.events.contains(&label))
            && (self.machines.is_empty() || self.machines.contains(&entry.machine))
            && self.store.is_none_or(|wanted| store == Some(&wanted))
    }
}

/// A webhooks file: `{"webhooks": [{"name": ..., "url": ..., "secret": ...}, ...]}`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Webhooks {
    hooks: Vec<WebhookConfig>,
}

/// The file as written, before it is checked.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    webhooks: Vec<RawHook>,
}

/// One hook as written, before it is checked.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHook {
    name: String,
    url: String,
    secret: String,
    #[serde(default)]
    events: Vec<String>,
    #[serde(default)]
    machines: Vec<String>,
    #[serde(default)]
    store: Option<String>,
    #[serde(default = "default_timeout")]
    timeout_ms: u64,
}

fn default_timeout() -> u64 {
    DEFAULT_TIMEOUT_MS
}

impl Webhooks {
    /// Reads and checks the webhooks file at `path`.
    pub fn load(path: &Path) -> Result<Webhooks, WebhookError> {
        let text =
            std::fs::read_to_string(path).map_err(|e| WebhookError::Read(path.to_path_buf(), e))?;
        Webhooks::from_json(&text)
    }

    /// Parses and checks a webhooks file's text.
    pub fn from_json(text: &str) -> Result<Webhooks, WebhookError> {
        let raw: RawFile =
            serde_json::from_str(text).map_err(|e| WebhookError::Malformed(e.to_string()))?;
        let hooks = raw
            .webhooks
            .into_iter()
            .enumerate()
            .map(|(index, hook)| hook.check(index + 1))
            .collect::<Result<Vec<_>, _>>()?;
        Webhooks::new(hooks)
    }

    /// The hooks given, checked as a file's are (a blank or repeated name, a URL that is not
    /// http, a blank secret, a timeout out of range are refused).
    pub fn new(hooks: Vec<WebhookConfig>) -> Result<Webhooks, WebhookError> {
        let mut names = HashSet::new();
        for (index, hook) in hooks.iter().enumerate() {
            check_hook(index + 1, hook)?;
            if !names.insert(hook.name.as_str()) {
                return Err(WebhookError::DuplicateName(hook.name.clone()));
            }
        }
        Ok(Webhooks { hooks })
    }

    /// The hooks, in the file's order.
    pub fn hooks(&self) -> &[WebhookConfig] {
        &self.hooks
    }

    /// Whether the file names no hook.
    pub fn is_empty(&self) -> bool {
        self.hooks.is_empty()
    }
}

impl RawHook {
    /// The hook, its machines and store read; `number` is its place in the list. A blank
    /// name is refused first, so that the errors after it can name the hook; the rest is
    /// checked by [`Webhooks::new`], as for hooks made in code.
    fn check(self, number: usize) -> Result<WebhookConfig, WebhookError> {
        if self.name.trim().is_empty() {
            return Err(WebhookError::BlankName(number));
        }
        let machines = self
            .machines
            .iter()
            .map(|machine| {
                serde_json::from_value(Value::String(machine.clone())).map_err(|_| {
                    WebhookError::UnknownMachine {
                        hook: self.name.clone(),
                        machine: machine.clone(),
                    }
                })
            })
            .collect::<Result<Vec<Machine>, _>>()?;
        let store = match &self.store {
            None => None,
            Some(text) => Some(SfId::parse_kind(text, KeyPrefix::WebStore).map_err(|e| {
                WebhookError::BadStore {
                    hook: self.name.clone(),
                    store: text.clone(),
                    reason: e.to_string(),
                }
            })?),
        };
        Ok(WebhookConfig {
            name: self.name,
            url: self.url,
            secret: self.secret,
            events: self.events,
            machines,
            store,
            timeout_ms: self.timeout_ms,
        })
    }
}

/// Checks one hook; `number` is its place in the list, to name a hook without a name.
fn check_hook(number: usize, hook: &WebhookConfig) -> Result<(), WebhookError> {
    if hook.name.trim().is_empty() {
        return Err(WebhookError::BlankName(number));
    }
    let name = || hook.name.clone();
    let url = || hook.url.clone();
    if hook.url.starts_with("https://") {
        return Err(WebhookError::Https {
            hook: name(),
            url: url(),
        });
    }
    let rest = hook.url.strip_prefix("http://").unwrap_or_default();
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if host.is_empty() || host.contains('@') || hook.url.chars().any(char::is_whitespace) {
        return Err(WebhookError::BadUrl {
            hook: name(),
            url: url(),
        });
    }
    if hook.secret.trim().is_empty() {
        return Err(WebhookError::BlankSecret(name()));
    }
    if !(1..=MAX_TIMEOUT_MS).contains(&hook.timeout_ms) {
        return Err(WebhookError::BadTimeout {
            hook: name(),
            timeout_ms: hook.timeout_ms,
        });
    }
    Ok(())
}

/// How a deliverer paces itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryOptions {
    /// The longest a retry waits ([`DEFAULT_MAX_BACKOFF`] by default). The waits start at
    /// [`BASE_BACKOFF`] and double, each drawn at random below its bound (full jitter).
    pub max_backoff: Duration,
    /// How often an idle deliverer looks for new events.
    pub poll: Duration,
    /// How many events one read of the log takes (1 to [`MAX_EVENTS_PER_READ`]).
    pub batch: usize,
}

impl Default for DeliveryOptions {
    fn default() -> DeliveryOptions {
        DeliveryOptions {
            max_backoff: DEFAULT_MAX_BACKOFF,
            poll: Duration::from_millis(200),
            batch: 100,
        }
    }
}

/// The bound of the wait after the `attempt`-th failed attempt at one event:
/// [`BASE_BACKOFF`] doubled `attempt - 1` times, at most `max`.
pub fn backoff_bound(attempt: u32, max: Duration) -> Duration {
    let doublings = attempt.saturating_sub(1);
    BASE_BACKOFF
        .saturating_mul(2u32.saturating_pow(doublings))
        .min(max)
}

/// The wait after the `attempt`-th failed attempt: drawn uniformly from zero to
/// [`backoff_bound`] (full jitter, so that hooks failing together do not retry together).
pub fn backoff(attempt: u32, max: Duration) -> Duration {
    let bound = backoff_bound(attempt, max);
    let nanos = u64::try_from(bound.as_nanos()).unwrap_or(u64::MAX);
    match getrandom::u64() {
        Ok(random) if nanos < u64::MAX => Duration::from_nanos(random % (nanos + 1)),
        // No randomness (or no room for it): the bound itself, which is never too soon.
        _ => bound,
    }
}

/// What one [`WebhookDeliverer::step`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// No event is waiting: the hook is up to date.
    Idle,
    /// The events up to this position were not for the hook: the cursor moved past them.
    Skipped(EventPosition),
    /// The event was delivered: the cursor moved past it.
    Delivered(EventPosition),
    /// The attempt failed; the event is tried again at the next step.
    Failed(Delivery),
}

/// Delivers one hook's events, one step at a time ([`WebhookDeliverer::step`]) or until
/// stopped ([`WebhookDeliverer::run`]). Run one deliverer per hook: two would both deliver.
pub struct WebhookDeliverer {
    store: Arc<dyn Store>,
    hook: WebhookConfig,
    options: DeliveryOptions,
    agent: ureq::Agent,
    /// The position delivered or skipped up to, once read from the store.
    cursor: Option<EventPosition>,
    /// Events read after the cursor and not yet handled, oldest first.
    pending: VecDeque<PublishedEvent>,
    /// The last failed attempt: its event and its number.
    last_failure: Option<(EventPosition, u32)>,
    /// The WebStore of each cart seen (`None`: no such cart).
    stores: HashMap<SfId, Option<SfId>>,
}

impl WebhookDeliverer {
    /// A deliverer of `hook`'s events from `store`. Nothing is read until the first step.
    pub fn new(store: Arc<dyn Store>, hook: WebhookConfig, options: DeliveryOptions) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_millis(hook.timeout_ms)))
            .max_redirects(0)
            .build()
            .new_agent();
        WebhookDeliverer {
            store,
            hook,
            options,
            agent,
            cursor: None,
            pending: VecDeque::new(),
            last_failure: None,
            stores: HashMap::new(),
        }
    }

    /// Starts one thread per hook of `hooks`, each running [`WebhookDeliverer::run`] until
    /// the handle is stopped or dropped.
    pub fn spawn(
        store: Arc<dyn Store>,
        hooks: &Webhooks,
        options: DeliveryOptions,
    ) -> Result<DeliveryHandle, WebhookError> {
        let mut handle = DeliveryHandle {
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
        };
        for hook in hooks.hooks() {
            let stop = Arc::clone(&handle.stop);
            let mut deliverer = WebhookDeliverer::new(Arc::clone(&store), hook.clone(), options);
            let thread = std::thread::Builder::new()
                .name(format!("cartflow-webhook-{}", hook.name))
                .spawn(move || deliverer.run(&stop))
                .map_err(WebhookError::Spawn)?;
            handle.threads.push(thread);
        }
        Ok(handle)
    }

    /// The hook delivered.
    pub fn hook(&self) -> &WebhookConfig {
        &self.hook
    }

    /// The position delivered or skipped up to (`None` before the first step).
    pub fn cursor(&self) -> Option<EventPosition> {
        self.cursor
    }

    /// Delivers until `stop` is set: steps while there is work, waits [`backoff`] after a
    /// failed attempt and [`DeliveryOptions::poll`] when idle, checking `stop` while it
    /// waits. A store error is logged and retried after a backoff too.
    pub fn run(&mut self, stop: &AtomicBool) {
        let mut store_failures = 0u32;
        while !stop.load(Ordering::Acquire) {
            let pause = match self.step() {
                Ok(step) => {
                    store_failures = 0;
                    match step {
                        Step::Idle => self.options.poll,
                        Step::Skipped(_) | Step::Delivered(_) => Duration::ZERO,
                        Step::Failed(delivery) => {
                            backoff(delivery.attempt, self.options.max_backoff)
                        }
                    }
                }
                Err(e) => {
                    store_failures = store_failures.saturating_add(1);
                    tracing::warn!(hook = %self.hook.name, error = %e, "webhook delivery failed");
                    backoff(store_failures, self.options.max_backoff)
                }
            };
            sleep_unless_stopped(pause, stop);
        }
    }

    /// One step: skips the events the hook does not want (moving the cursor past them), or
    /// makes one attempt at the next event it wants. Blocks for at most the hook's timeout.
    /// After a store error the next step reads the cursor from the store again.
    pub fn step(&mut self) -> Result<Step, WebhookError> {
        let step = self.try_step();
        if step.is_err() {
            self.cursor = None;
            self.pending.clear();
        }
        step
    }

    fn try_step(&mut self) -> Result<Step, WebhookError> {
        let cursor = self.start()?;
        if self.pending.is_empty() {
            let batch = self.options.batch.clamp(1, MAX_EVENTS_PER_READ);
            self.pending
                .extend(self.store.events_after(Some(&cursor), batch)?);
        }
        let mut skipped = None;
        while let Some(cart) = self.pending.front().map(|e| e.entry.cart_id) {
            let store = self.store_of(&cart)?;
            let Some(event) = self.pending.front() else {
                break;
            };
            if self.hook.wants(event, store.as_ref()) {
                break;
            }
            skipped = Some(event.position);
            self.pending.pop_front();
        }
        if let Some(to) = skipped {
            self.store
                .advance_webhook(&self.hook.name, Some(&to), None)?;
            self.cursor = Some(to);
            return Ok(Step::Skipped(to));
        }
        match self.pending.front().cloned() {
            None => Ok(Step::Idle),
            Some(event) => self.attempt(&event),
        }
    }

    /// The cursor, read from the store once (at the first step, or when this is called).
    /// A hook that never ran starts at the last event committed, and records that start in
    /// the store: call this before committing what the hook must see, to be sure it sees it.
    pub fn start(&mut self) -> Result<EventPosition, WebhookError> {
        if let Some(cursor) = self.cursor {
            return Ok(cursor);
        }
        let name = &self.hook.name;
        let cursor = match self.store.webhook_cursor(name)? {
            Some(cursor) => cursor,
            None => {
                let start = self.store.last_event()?.unwrap_or_default();
                self.store.advance_webhook(name, Some(&start), None)?;
                tracing::info!(hook = %name, start = %start, "a new webhook starts after the last event");
                start
            }
        };
        // Attempts go on counting from where an earlier run left them.
        self.last_failure = self
            .store
            .deliveries(name, 1)?
            .into_iter()
            .find(|d| !d.delivered() && d.position > cursor)
            .map(|d| (d.position, d.attempt));
        self.cursor = Some(cursor);
        Ok(cursor)
    }

    /// The WebStore of cart `cart`, read once per cart.
    fn store_of(&mut self, cart: &SfId) -> Result<Option<SfId>, WebhookError> {
        if let Some(store) = self.stores.get(cart) {
            return Ok(*store);
        }
        let store = self.store.cart(cart)?.map(|c| c.web_store_id);
        // A long-running deliverer sees every cart: forget them now and then, not keep all.
        if self.stores.len() >= MAX_CACHED_CARTS {
            self.stores.clear();
        }
        self.stores.insert(*cart, store);
        Ok(store)
    }

    /// One attempt at `event`: POSTs it, logs the attempt and, when it was delivered, moves
    /// the cursor past it in the same write.
    fn attempt(&mut self, event: &PublishedEvent) -> Result<Step, WebhookError> {
        let attempt = match self.last_failure {
            Some((position, n)) if position == event.position => n.saturating_add(1),
            _ => 1,
        };
        let store = self.store_of(&event.entry.cart_id)?;
        let outcome = self.post(
            &body(&self.hook.name, event, store.as_ref()),
            event.position,
        );
        let delivery = Delivery {
            hook: self.hook.name.clone(),
            position: event.position,
            attempt,
            at: chrono::Utc::now(),
            outcome,
        };
        let name = &self.hook.name;
        if delivery.delivered() {
            self.store
                .advance_webhook(name, Some(&event.position), Some(&delivery))?;
            tracing::info!(hook = %name, position = %event.position, attempt, "webhook delivered");
            self.pending.pop_front();
            self.cursor = Some(event.position);
            self.last_failure = None;
            return Ok(Step::Delivered(event.position));
        }
        self.store.advance_webhook(name, None, Some(&delivery))?;
        if let DeliveryOutcome::Failed { reason, .. } = &delivery.outcome {
            tracing::warn!(hook = %name, position = %event.position, attempt, %reason, "webhook delivery failed; retrying");
        }
        self.last_failure = Some((event.position, attempt));
        Ok(Step::Failed(delivery))
    }

    /// POSTs `body`, signed, and reads how it went.
    fn post(&self, body: &str, position: EventPosition) -> DeliveryOutcome {
        let timestamp = chrono::Utc::now().timestamp().to_string();
        let signature = sign(&self.hook.secret, &timestamp, body);
        let sent = self
            .agent
            .post(&self.hook.url)
            .header("Content-Type", "application/json")
            .header(TIMESTAMP_HEADER, &timestamp)
            .header(SIGNATURE_HEADER, &signature)
            .header(EVENT_ID_HEADER, position.to_string())
            .send(body);
        match sent {
            Ok(answer) => {
                let status = answer.status().as_u16();
                // Read so the connection can serve the next request; what it says is unused.
                let _ = answer
                    .into_body()
                    .with_config()
                    .limit(MAX_ANSWER_BYTES)
                    .read_to_vec();
                if (200..300).contains(&status) {
                    DeliveryOutcome::Delivered { status }
                } else {
                    DeliveryOutcome::Failed {
                        status: Some(status),
                        reason: format!("it answered HTTP {status}"),
                    }
                }
            }
            Err(e) => DeliveryOutcome::Failed {
                status: None,
                reason: format!("no answer: {e}"),
            },
        }
    }
}

impl fmt::Debug for WebhookDeliverer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookDeliverer")
            .field("hook", &self.hook)
            .field("cursor", &self.cursor)
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

/// The JSON body sent for `event`: the event (`Position`, `At`, `Actor`, `CartId`, `Event`,
/// `Machine`, `Record`, `From`, `To`) with the hook's name (`Hook`) and the cart's WebStore
/// (`StoreId`, null when the cart is not found).
pub fn body(hook: &str, event: &PublishedEvent, store: Option<&SfId>) -> String {
    let mut value = serde_json::to_value(event).unwrap_or(Value::Null);
    if let Value::Object(fields) = &mut value {
        fields.insert("Hook".into(), Value::from(hook));
        fields.insert(
            "StoreId".into(),
            store.map_or(Value::Null, |s| Value::from(s.to_string())),
        );
    }
    value.to_string()
}

/// Sleeps `pause`, waking early when `stop` is set.
fn sleep_unless_stopped(pause: Duration, stop: &AtomicBool) {
    let deadline = Instant::now() + pause;
    loop {
        let now = Instant::now();
        if now >= deadline || stop.load(Ordering::Acquire) {
            return;
        }
        std::thread::sleep((deadline - now).min(Duration::from_millis(20)));
    }
}

/// The delivery threads [`WebhookDeliverer::spawn`] started: [`DeliveryHandle::stop`] (or a
/// drop) stops them after the attempt in hand and waits for them.
pub struct DeliveryHandle {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl DeliveryHandle {
    /// Stops every delivery thread and waits for them. An event whose attempt was cut short
    /// is sent again by the next run.
    pub fn stop(mut self) {
        self.stop_and_join();
    }

    /// How many hooks are being delivered.
    pub fn hooks(&self) -> usize {
        self.threads.len()
    }

    fn stop_and_join(&mut self) {
        self.stop.store(true, Ordering::Release);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl Drop for DeliveryHandle {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

impl fmt::Debug for DeliveryHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeliveryHandle")
            .field("hooks", &self.threads.len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(hook: &str) -> String {
        format!(r#"{{"webhooks": [{hook}]}}"#)
    }

    #[test]
    fn a_file_is_read_with_its_defaults() {
        let hooks = Webhooks::from_json(&file(
            r#"{"name": "crm", "url": "http://127.0.0.1:9000/hook", "secret": "s3cret",
                "machines": ["Session"], "store": "0ZE0000000000G9"}"#,
        ))
        .unwrap();
        let hook = &hooks.hooks()[0];
        assert_eq!(hook.timeout_ms, DEFAULT_TIMEOUT_MS);
        assert_eq!(hook.machines, [Machine::Session]);
        assert!(hook.events.is_empty());
        assert!(hook.store.is_some());
        assert!(!format!("{hook:?}").contains("s3cret"));
    }

    #[test]
    fn each_bad_hook_is_refused_by_name() {
        let base = r#""url": "http://h/", "secret": "s""#;
        for (hook, expected) in [
            (
                format!(r#"{{"name": " ", {base}}}"#),
                "webhook #1 has a blank name",
            ),
            (
                r#"{"name": "a", "url": "ftp://h", "secret": "s"}"#.to_owned(),
                "webhook \"a\": the url",
            ),
            (
                r#"{"name": "a", "url": "https://h", "secret": "s"}"#.to_owned(),
                "is https",
            ),
            (
                r#"{"name": "a", "url": "http://h", "secret": ""}"#.to_owned(),
                "webhook \"a\" has a blank secret",
            ),
            (
                format!(r#"{{"name": "a", {base}, "machines": ["Order"]}}"#),
                "unknown machine \"Order\"",
            ),
            (
                format!(r#"{{"name": "a", {base}, "store": "nope"}}"#),
                "webhook \"a\": the store",
            ),
            (
                format!(r#"{{"name": "a", {base}, "timeout_ms": 0}}"#),
                "timeout_ms is 0",
            ),
            (
                format!(r#"{{"name": "a", {base}}}, {{"name": "a", {base}}}"#),
                "webhook \"a\" is named twice",
            ),
            (
                format!(r#"{{"name": "a", {base}, "colour": "red"}}"#),
                "unknown field `colour`",
            ),
        ] {
            let error = Webhooks::from_json(&file(&hook)).unwrap_err().to_string();
            assert!(error.contains(expected), "{error} lacks {expected}");
        }
    }

    #[test]
    fn backoff_doubles_from_100_ms_up_to_its_cap_and_never_exceeds_its_bound() {
        let max = Duration::from_secs(60);
        assert_eq!(backoff_bound(1, max), Duration::from_millis(100));
        assert_eq!(backoff_bound(2, max), Duration::from_millis(200));
        assert_eq!(backoff_bound(4, max), Duration::from_millis(800));
        assert_eq!(backoff_bound(20, max), max);
        assert_eq!(backoff_bound(33, max), max);
        assert_eq!(backoff_bound(u32::MAX, max), max);
        assert_eq!(
            backoff_bound(u32::MAX, Duration::MAX),
            BASE_BACKOFF * u32::MAX
        );
        for attempt in 1..40 {
            assert!(backoff(attempt, max) <= backoff_bound(attempt, max));
        }
    }
}
