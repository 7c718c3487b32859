//! The threads provider calls run on. A provider runs off the worker's thread so that its
//! timeout can be enforced (the worker stops waiting; the provider cannot be stopped) and a
//! panic contained; the threads are kept from call to call instead of spawned for each, and
//! every call gets a thread that is not busy, so a provider that hangs never delays another.

use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;

use crate::integrations::{IntegrationRequest, Provider, ProviderError, Verdict};

/// A provider's answer, or the panic it raised.
pub(crate) type Answer = thread::Result<Result<Verdict, ProviderError>>;

/// One call: the provider, its request, and where its answer goes.
struct Job {
    provider: Provider,
    request: IntegrationRequest,
    answer: mpsc::SyncSender<Answer>,
}

/// What the pool's threads share.
struct Shared {
    jobs: Mutex<mpsc::Receiver<Job>>,
    /// Threads waiting for a job that no submitted job has reserved yet.
    free: AtomicUsize,
}

/// See the module's comment. Dropping the pool ends its threads once they are idle.
pub(crate) struct ProviderPool {
    submit: mpsc::Sender<Job>,
    shared: Arc<Shared>,
}

/// Idle threads kept for later calls; more than this many idle at once end.
const KEEP_IDLE: usize = 16;

impl ProviderPool {
    /// A pool with no threads yet: they start with the first calls.
    pub(crate) fn new() -> ProviderPool {
        let (submit, jobs) = mpsc::channel();
        ProviderPool {
            submit,
            shared: Arc::new(Shared {
                jobs: Mutex::new(jobs),
                free: AtomicUsize::new(0),
            }),
        }
    }

    /// Runs `provider` on a thread that is not busy (one started for it if none is idle) and
    /// returns where its answer will arrive. `Err` says why it could not be started.
    pub(crate) fn call(
        &self,
        provider: Provider,
        request: IntegrationRequest,
    ) -> Result<mpsc::Receiver<Answer>, String> {
        // Reserve an idle thread for this call, or start one that is reserved from birth.
        let reserved = self
            .shared
            .free
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if !reserved {
            self.start_thread()?;
        }
        let (answer, receiver) = mpsc::sync_channel(1);
        let job = Job {
            provider,
            request,
            answer,
        };
        self.submit
            .send(job)
            .map_err(|_| "the provider threads are gone".to_owned())?;
        Ok(receiver)
    }

    fn start_thread(&self) -> Result<(), String> {
        let shared = Arc::clone(&self.shared);
        thread::Builder::new()
            .name("cartflow-provider".into())
            .spawn(move || serve(&shared))
            .map(|_| ())
            .map_err(|e| format!("could not start the provider: {e}"))
    }
}

/// A pool thread: runs jobs until the pool is dropped, or until enough others are idle.
fn serve(shared: &Shared) {
    loop {
        let job = match shared.jobs.lock() {
            Ok(jobs) => jobs.recv(),
            Err(poisoned) => poisoned.into_inner().recv(),
        };
        let Ok(job) = job else {
            return;
        };
        let provider = job.provider;
        let request = job.request;
        let result = panic::catch_unwind(AssertUnwindSafe(|| provider.run(&request)));
        // The caller may have stopped waiting (a timeout): then nobody takes the answer.
        let _ = job.answer.send(result);
        let idle = shared.free.fetch_add(1, Ordering::SeqCst);
        if idle >= KEEP_IDLE {
            // Unreserve this thread again, unless a call took it meanwhile (then run it).
            if shared
                .free
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample;
    use std::time::Duration;

    fn request() -> IntegrationRequest {
        let data = sample::dataset();
        IntegrationRequest {
            operation_id: sample::store_id(),
            cart: data.carts[0].clone(),
            items: Vec::new().into(),
            order: None,
        }
    }

    fn answering(verdict: Verdict) -> Provider {
        Provider::Inventory(Arc::new(move |_: &IntegrationRequest| Ok(verdict.clone())))
    }

    #[test]
    fn calls_reuse_the_threads_of_finished_calls() {
        let pool = ProviderPool::new();
        for _ in 0..20 {
            let answer = pool.call(answering(Verdict::Passed), request()).unwrap();
            assert!(matches!(answer.recv().unwrap(), Ok(Ok(Verdict::Passed))));
            // The thread is back among the free ones before the next call.
            for _ in 0..1000 {
                if pool.shared.free.load(Ordering::SeqCst) == 1 {
                    break;
                }
                thread::sleep(Duration::from_millis(1));
            }
            assert_eq!(pool.shared.free.load(Ordering::SeqCst), 1);
        }
    }

    #[test]
    fn a_hanging_provider_does_not_hold_up_the_next_call() {
        let pool = ProviderPool::new();
        let (release, gate) = mpsc::channel::<()>();
        let gate = Mutex::new(gate);
        let hanging = Provider::Inventory(Arc::new(move |_: &IntegrationRequest| {
            let _ = gate.lock().unwrap().recv();
            Ok(Verdict::Passed)
        }));
        let stuck = pool.call(hanging, request()).unwrap();
        let next = pool.call(answering(Verdict::Passed), request()).unwrap();
        assert!(matches!(next.recv().unwrap(), Ok(Ok(Verdict::Passed))));
        assert!(stuck.try_recv().is_err(), "the hanging call answered");
        release.send(()).unwrap();
        assert!(matches!(stuck.recv().unwrap(), Ok(Ok(Verdict::Passed))));
    }

    #[test]
    fn a_panicking_provider_answers_its_panic_and_the_thread_serves_on() {
        let pool = ProviderPool::new();
        let panicking = Provider::Inventory(Arc::new(
            |_: &IntegrationRequest| -> Result<Verdict, ProviderError> { panic!("a provider bug") },
        ));
        let answer = pool.call(panicking, request()).unwrap();
        assert!(answer.recv().unwrap().is_err());
        let next = pool.call(answering(Verdict::Passed), request()).unwrap();
        assert!(matches!(next.recv().unwrap(), Ok(Ok(Verdict::Passed))));
    }
}
