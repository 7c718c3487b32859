//! The flow driver: the standard checkout template's hub loop, run against the
//! engine. Given the buyer's input for the screen steps it moves a checkout forward until it
//! needs input the buyer has not given, fails, or completes.
//!
//! The driver keeps no state of its own: every turn re-reads the session, so a checkout one
//! process stopped anywhere (even between locking a step and invoking its action) is
//! continued by another.

use std::thread;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::engine::Engine;
use crate::error::{CheckoutError, RecordKind, Stale};
use crate::machine::{CheckoutDetails, Command, Output, StepKind};
use crate::model::{Address, CartCheckoutSession, CartValidationOutput, SessionState, SfId};

/// What the buyer entered on the screens; a screen whose input is missing stops the drive.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BuyerInput {
    /// Shipping Address.
    pub deliver_to: Option<Address>,
    /// Delivery Method: one of the offered methods; `None` takes the cheapest offered.
    pub delivery_method_id: Option<String>,
    /// Payment And Billing Address: the tokenized payment method.
    pub payment_token: Option<String>,
    /// Checkout Summary: the buyer placed the order.
    pub place_order: bool,
}

/// How a drive ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Drive {
    /// The checkout is complete: the order is activated and the cart closed.
    Complete {
        /// The session.
        session_id: SfId,
        /// The activated order.
        order_id: SfId,
    },
    /// A screen needs input the buyer has not given.
    NeedsInput {
        /// The session.
        session_id: SfId,
        /// The screen's State.
        state: SessionState,
    },
    /// A step failed: the session is in Error with these messages. Cancel, or start again.
    Failed {
        /// The session.
        session_id: SfId,
        /// The cart's validation outputs.
        outputs: Vec<CartValidationOutput>,
    },
}

/// How the driver waits for background operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waiting {
    /// Run waiting operations in the driving thread (no worker needed).
    RunInline,
    /// Poll the session until workers finish, for at most this long.
    Poll(Duration),
}

/// Drives `cart`'s checkout as `actor`.
pub fn drive(
    engine: &Engine,
    actor: &str,
    cart: &SfId,
    input: &BuyerInput,
    waiting: Waiting,
) -> Result<Drive, CheckoutError> {
    let cart_id = cart.to_string();
    let started = Instant::now();
    // Each turn makes progress or returns, so the number of turns is bounded by the template.
    // The session as the driver's last command left it, when that command wrote it: the next
    // turn starts from it instead of reading it again, as a read an instant later would.
    let mut known: Option<CartCheckoutSession> = None;
    for _ in 0..(4 * engine.table().template().steps.len() + 16) {
        let session = match known.take() {
            Some(session) => session,
            None => current_session(engine, actor, &cart_id)?,
        };
        let session_id = session.id;
        let state = session.state.unwrap_or(SessionState::Error);
        if session.is_error || state == SessionState::Error {
            let outputs = engine.store().validation_outputs(cart)?;
            return Ok(Drive::Failed {
                session_id,
                outputs,
            });
        }
        if Some(state) == engine.table().terminal() {
            let order_id = session.order_id.ok_or_else(|| {
                CheckoutError::Defect("a complete session without an order".into())
            })?;
            return Ok(Drive::Complete {
                session_id,
                order_id,
            });
        }
        let step = engine
            .table()
            .template()
            .step(state)
            .ok_or_else(|| CheckoutError::Stale(Stale::UnknownState(state.to_string())))?;
        if session.is_processing {
            // A step left running (by a process that stopped, or a claim that could not be
            // folded into its start): run it here if it is still claimable, before reading it.
            if let (Waiting::RunInline, Some(op)) = (&waiting, session.background_operation_id)
                && engine.run_operation_now(op)?.is_some()
            {
                continue;
            }
            let active = match session.background_operation_id {
                Some(op) => engine
                    .store()
                    .operation(&op)?
                    .is_some_and(|op| op.status.is_active()),
                None => false,
            };
            if active {
                wait(engine, &session, waiting, started)?;
            } else {
                // Locked but not yet invoked (perhaps by a process that stopped): invoke.
                known = run_step_action(engine, actor, &cart_id, step.kind, waiting)?;
            }
            continue;
        }
        match step.kind {
            StepKind::Entry => known = advance(engine, actor, &session, step.next)?,
            StepKind::Screen => {
                let Some(details) = screen_input(engine, cart, state, input)? else {
                    return Ok(Drive::NeedsInput { session_id, state });
                };
                if details != CheckoutDetails::default() {
                    engine.execute(
                        actor,
                        Command::SetDetails {
                            cart_id: cart_id.clone(),
                            details,
                        },
                    )?;
                }
                known = advance(engine, actor, &session, step.next)?;
            }
            StepKind::Async(_) | StepKind::Payment | StepKind::Custom(_) => {
                let next = step.next.map(|s| s.as_str().to_owned()).unwrap_or_default();
                engine.execute(
                    actor,
                    Command::UpdateSession {
                        session_id: session_id.to_string(),
                        next_state: next,
                        exp_current_state: Some(state.as_str().to_owned()),
                    },
                )?;
                known = run_step_action(engine, actor, &cart_id, step.kind, waiting)?;
            }
            StepKind::Terminal => {}
        }
    }
    Err(CheckoutError::Stale(Stale::NoProgress))
}

/// The cart's active session, starting (or resuming) checkout as the template does.
fn current_session(
    engine: &Engine,
    actor: &str,
    cart_id: &str,
) -> Result<CartCheckoutSession, CheckoutError> {
    let id: SfId = cart_id
        .parse()
        .map_err(|e| CheckoutError::InvalidInput(format!("{e}")))?;
    let latest = engine
        .store()
        .sessions_of(&id)?
        .into_iter()
        .rev()
        .find(|s| is_current(engine, s));
    if let Some(session) = latest {
        return Ok(session);
    }
    let output = engine.execute(
        actor,
        Command::StartSession {
            cart_id: cart_id.to_owned(),
            initial_state: None,
        },
    )?;
    let Output::RequestId(session) = output else {
        return Err(CheckoutError::Defect(
            "checkoutSessionAction answered no session".into(),
        ));
    };
    engine
        .store()
        .session(&session)?
        .ok_or(CheckoutError::Stale(Stale::Vanished(RecordKind::Session)))
}

/// Whether `session` is the one the driver goes on with: active, or archived at the end.
fn is_current(engine: &Engine, session: &CartCheckoutSession) -> bool {
    !session.is_archived || (session.state.is_some() && session.state == engine.table().terminal())
}

/// Hands a commit on unchanged, keeping in `known` the current session it writes, when it
/// writes exactly one ([`is_current`]).
fn keeping_session<'a>(
    engine: &'a Engine,
    known: &'a mut Option<CartCheckoutSession>,
) -> impl FnMut(&crate::machine::Snapshot, Option<crate::store::Commit>) -> Option<crate::store::Commit>
+ 'a {
    move |_, commit| {
        let mut current = commit
            .iter()
            .flat_map(|c| &c.changes.sessions)
            .filter(|s| is_current(engine, s));
        *known = match (current.next(), current.next()) {
            (Some(only), None) => Some(only.clone()),
            _ => None,
        };
        commit
    }
}

/// Advances the session to `next`: the session as the advance wrote it.
fn advance(
    engine: &Engine,
    actor: &str,
    session: &CartCheckoutSession,
    next: Option<SessionState>,
) -> Result<Option<CartCheckoutSession>, CheckoutError> {
    let command = Command::Advance {
        session_id: session.id.to_string(),
        state: next.map(|s| s.as_str().to_owned()).unwrap_or_default(),
        exp_current_state: session.state.map(|s| s.as_str().to_owned()),
    };
    let mut known = None;
    engine.execute_user_seeing(actor, &command, &mut keeping_session(engine, &mut known))?;
    Ok(known)
}

/// The command of an async step (or the payment step). Run inline, its operation is claimed
/// in the commit that starts it (where the engine allows) and run at once: the session as
/// its report wrote it.
fn run_step_action(
    engine: &Engine,
    actor: &str,
    cart_id: &str,
    kind: StepKind,
    waiting: Waiting,
) -> Result<Option<CartCheckoutSession>, CheckoutError> {
    let Some(command) = Command::for_step(kind, cart_id.to_owned()) else {
        return Ok(None);
    };
    let mut known = None;
    let started = match waiting {
        Waiting::RunInline => engine
            .execute_claiming(actor, &command)
            .and_then(|(_, claim)| {
                claim.map_or(Ok(()), |claim| {
                    let mut keep = keeping_session(engine, &mut known);
                    engine.run_claimed_seeing(claim, &mut keep).map(drop)
                })
            }),
        Waiting::Poll(_) => engine.execute(actor, command).map(drop),
    };
    match started {
        Ok(()) => Ok(known),
        // Another client invoked the step first (it may even have finished): the next turn
        // re-reads the session and goes on from there.
        Err(e) if e.requirement().is_some_and(moved_on) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The requirements a step's action fails when another client ran the step meanwhile.
fn moved_on(requirement: crate::machine::Requirement) -> bool {
    use crate::machine::Requirement as R;
    matches!(
        requirement,
        R::SessionPhaseRow | R::StepRow | R::NextStateRow | R::NoOperationInProgress
    )
}

/// The buyer input a screen writes, or `None` when the buyer has not given it yet.
fn screen_input(
    engine: &Engine,
    cart: &SfId,
    state: SessionState,
    input: &BuyerInput,
) -> Result<Option<CheckoutDetails>, CheckoutError> {
    let none = CheckoutDetails::default();
    Ok(match state {
        SessionState::ShippingAddress => input.deliver_to.clone().map(|address| CheckoutDetails {
            deliver_to: Some(address),
            ..none
        }),
        SessionState::DeliveryMethod => {
            let offered = engine
                .store()
                .cart(cart)?
                .map(|c| c.delivery_options)
                .unwrap_or_default();
            let chosen = match &input.delivery_method_id {
                Some(method) => Some(method.clone()),
                None => offered
                    .iter()
                    .min_by(|a, b| {
                        (a.amount, &a.delivery_method_id).cmp(&(b.amount, &b.delivery_method_id))
                    })
                    .map(|o| o.delivery_method_id.clone()),
            };
            // With no options offered (no shipment integration), nothing is chosen.
            Some(CheckoutDetails {
                delivery_method_id: chosen,
                ..none
            })
        }
        SessionState::PaymentAndBillingAddress => {
            input.payment_token.clone().map(|token| CheckoutDetails {
                payment_token: Some(token),
                ..none
            })
        }
        SessionState::CheckoutSummary => input.place_order.then_some(none),
        _ => Some(none),
    })
}

/// Waits for the session's operation: runs it here, or polls until a worker has.
fn wait(
    engine: &Engine,
    session: &CartCheckoutSession,
    waiting: Waiting,
    started: Instant,
) -> Result<(), CheckoutError> {
    match waiting {
        Waiting::RunInline => {
            if let Some(op) = session.background_operation_id
                && engine.run_operation_now(op)?.is_none()
            {
                // Another worker holds it: give it a moment.
                thread::sleep(Duration::from_millis(2));
            }
            Ok(())
        }
        Waiting::Poll(limit) => {
            let mut pause = Duration::from_millis(1);
            loop {
                let now = engine.store().session(&session.id)?;
                if now.as_ref().is_none_or(|s| !s.is_processing) {
                    return Ok(());
                }
                if started.elapsed() > limit {
                    return Err(CheckoutError::Stale(Stale::StillProcessing {
                        session: session.id,
                        waited_ms: u64::try_from(limit.as_millis()).unwrap_or(u64::MAX),
                    }));
                }
                thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(50));
            }
        }
    }
}
