//! The simulation's one scheduler. Every actor runs on a thread of its own, but only the
//! thread holding the baton runs: at each yield point (every store call, every task's end)
//! the holder hands it to a waiting actor drawn by the seeded generator. So the interleaving
//! of the actors' store calls, and with it everything they do, follows from the seed alone.

use std::cell::Cell;
use std::sync::{Condvar, Mutex, MutexGuard};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

thread_local! {
    /// The actor this thread runs, if it is one of the simulation's.
    static ACTOR: Cell<Option<usize>> = const { Cell::new(None) };
}

/// Who holds the baton and who waits for it.
struct Turns {
    holder: Option<usize>,
    waiting: Vec<usize>,
    /// How many turns an actor gets, relative to the others, by actor.
    weights: Vec<u32>,
    rng: SmallRng,
    /// Set when the run ends: each actor finishes the task it is in, without yielding, and
    /// leaves.
    stopping: bool,
}

/// The baton: see the module's comment.
pub struct Baton {
    turns: Mutex<Turns>,
    /// One per actor, so that a hand-over wakes only the actor it names.
    turn: Vec<Condvar>,
    /// Signalled as actors join.
    joined: Condvar,
}

impl Baton {
    /// A baton for `actors` actors whose hand-overs follow `seed`.
    pub fn new(seed: u64, actors: usize) -> Baton {
        Baton {
            turns: Mutex::new(Turns {
                holder: None,
                waiting: Vec::new(),
                weights: Vec::new(),
                rng: SmallRng::seed_from_u64(seed),
                stopping: false,
            }),
            turn: (0..actors).map(|_| Condvar::new()).collect(),
            joined: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Turns> {
        self.turns.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks this thread as actor `me`, drawn `weight` times as often as an actor of weight
    /// 1, and waits for its first turn.
    pub fn join(&self, me: usize, weight: u32) {
        ACTOR.with(|a| a.set(Some(me)));
        let mut turns = self.lock();
        if turns.weights.len() <= me {
            turns.weights.resize(me + 1, 1);
        }
        turns.weights[me] = weight.max(1);
        turns.waiting.push(me);
        self.joined.notify_all();
        self.wait_for(turns, me);
    }

    /// Hands the baton to the first actor once `actors` have joined (called by the thread
    /// that started them).
    pub fn start(&self, actors: usize) {
        let mut turns = self.lock();
        while turns.waiting.len() < actors {
            turns = self.joined.wait(turns).unwrap_or_else(|e| e.into_inner());
        }
        turns.waiting.sort_unstable();
        self.hand_over(&mut turns);
    }

    /// A yield point: the holder joins the waiting actors and one of them, drawn by the
    /// seed, runs next. A no-op outside the simulation's actors and once the run stops.
    pub fn yield_now(&self) {
        let Some(me) = ACTOR.with(Cell::get) else {
            return;
        };
        let mut turns = self.lock();
        if turns.stopping {
            return;
        }
        turns.waiting.push(me);
        self.hand_over(&mut turns);
        self.wait_for(turns, me);
    }

    /// Actor `me` is done: the baton goes to a waiting actor.
    pub fn leave(&self) {
        let mut turns = self.lock();
        self.hand_over(&mut turns);
        ACTOR.with(|a| a.set(None));
    }

    /// Ends the run: no more hand-overs until each actor has left.
    pub fn stop(&self) {
        self.lock().stopping = true;
    }

    /// Whether the run is ending.
    pub fn stopping(&self) -> bool {
        self.lock().stopping
    }

    /// Draws the next holder among the waiting actors and wakes it.
    fn hand_over(&self, turns: &mut Turns) {
        let total: u32 = turns.waiting.iter().map(|a| turns.weights[*a]).sum();
        if total == 0 {
            turns.holder = None;
            return;
        }
        let mut pick = turns.rng.random_range(0..total);
        let index = turns
            .waiting
            .iter()
            .position(|a| {
                let w = turns.weights[*a];
                let here = pick < w;
                pick = pick.saturating_sub(w);
                here
            })
            .unwrap_or(0);
        let next = turns.waiting.remove(index);
        turns.holder = Some(next);
        self.turn[next].notify_one();
    }

    fn wait_for(&self, mut turns: MutexGuard<'_, Turns>, me: usize) {
        while turns.holder != Some(me) {
            turns = self.turn[me].wait(turns).unwrap_or_else(|e| e.into_inner());
        }
    }
}
