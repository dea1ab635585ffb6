//! A work queue of keys, as client-go's: a key is queued at most once, is never processed by two
//! workers at a time, and a key added while it is being processed is processed once more after.
//! Failures are retried with a per-key exponential backoff.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

/// What a reconcile asks for next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Nothing until something changes.
    Done,
    /// Look again after this long (waiting on something no watch reports).
    After(Duration),
}

const BACKOFF_BASE: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(60);

pub struct WorkQueue<K> {
    name: &'static str,
    state: Mutex<State<K>>,
    notify: Notify,
}

struct State<K> {
    pending: VecDeque<K>,
    queued: HashSet<K>,
    active: HashSet<K>,
    /// Added while active: queued again when done.
    dirty: HashSet<K>,
    failures: HashMap<K, u32>,
}

impl<K: Hash + Eq + Clone + Send + Sync + std::fmt::Debug + 'static> WorkQueue<K> {
    pub fn new(name: &'static str) -> Arc<Self> {
        Arc::new(Self {
            name,
            state: Mutex::new(State {
                pending: VecDeque::new(),
                queued: HashSet::new(),
                active: HashSet::new(),
                dirty: HashSet::new(),
                failures: HashMap::new(),
            }),
            notify: Notify::new(),
        })
    }

    pub fn add(&self, key: K) {
        let mut state = self.state.lock().expect("queue lock");
        if state.active.contains(&key) {
            state.dirty.insert(key);
        } else if state.queued.insert(key.clone()) {
            state.pending.push_back(key);
            drop(state);
            self.notify.notify_one();
        }
    }

    pub fn extend(&self, keys: impl IntoIterator<Item = K>) {
        for key in keys {
            self.add(key);
        }
    }

    pub fn add_after(self: &Arc<Self>, key: K, delay: Duration) {
        let queue = Arc::clone(self);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            queue.add(key);
        });
    }

    /// Keys waiting, for metrics and tests.
    pub fn len(&self) -> usize {
        self.state.lock().expect("queue lock").pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    async fn next(&self) -> K {
        loop {
            let notified = self.notify.notified();
            {
                let mut state = self.state.lock().expect("queue lock");
                if let Some(key) = state.pending.pop_front() {
                    state.queued.remove(&key);
                    state.active.insert(key.clone());
                    if !state.pending.is_empty() {
                        // Wake another worker for the rest.
                        self.notify.notify_one();
                    }
                    return key;
                }
            }
            notified.await;
        }
    }

    fn done(self: &Arc<Self>, key: &K, outcome: anyhow::Result<Next>) {
        let retry = {
            let mut state = self.state.lock().expect("queue lock");
            state.active.remove(key);
            let retry = match &outcome {
                Ok(_) => {
                    state.failures.remove(key);
                    None
                }
                Err(err) => {
                    let failures = state.failures.entry(key.clone()).or_insert(0);
                    *failures += 1;
                    let delay = BACKOFF_BASE
                        .saturating_mul(2u32.saturating_pow(*failures - 1))
                        .min(BACKOFF_MAX);
                    tracing::warn!(
                        queue = self.name,
                        ?key,
                        failures = *failures,
                        ?delay,
                        "{err:#}"
                    );
                    Some(delay)
                }
            };
            if state.dirty.remove(key) {
                drop(state);
                self.add(key.clone());
            }
            retry
        };
        match (retry, outcome) {
            (Some(delay), _) => self.add_after(key.clone(), delay),
            (None, Ok(Next::After(delay))) => self.add_after(key.clone(), delay),
            _ => {}
        }
    }

    /// Runs `workers` workers that reconcile keys with `reconcile` until the future is dropped.
    pub async fn run<F, Fut>(self: Arc<Self>, workers: usize, reconcile: F)
    where
        F: Fn(K) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = anyhow::Result<Next>> + Send + 'static,
    {
        let reconcile = Arc::new(reconcile);
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..workers.max(1) {
            let queue = Arc::clone(&self);
            let reconcile = Arc::clone(&reconcile);
            tasks.spawn(async move {
                loop {
                    let key = queue.next().await;
                    let outcome = reconcile(key.clone()).await;
                    queue.done(&key, outcome);
                }
            });
        }
        while tasks.join_next().await.is_some() {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn a_key_added_many_times_is_processed_once_and_retried_on_failure() {
        let queue = WorkQueue::<u32>::new("test");
        for _ in 0..10 {
            queue.add(1);
        }
        queue.add(2);
        assert_eq!(queue.len(), 2);
        let calls = Arc::new(AtomicUsize::new(0));
        let seen = Arc::clone(&calls);
        let run = tokio::spawn(Arc::clone(&queue).run(2, move |key| {
            let seen = Arc::clone(&seen);
            async move {
                let n = seen.fetch_add(1, Ordering::SeqCst);
                // Key 2 fails once, then succeeds.
                if key == 2 && n < 2 {
                    anyhow::bail!("first try fails");
                }
                Ok(Next::Done)
            }
        }));
        tokio::time::sleep(Duration::from_millis(600)).await;
        run.abort();
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }
}
