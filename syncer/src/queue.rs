//! A work queue of keys, as client-go's: a key is queued at most once, is never processed by two
//! workers at a time, and a key added while it is being processed is processed once more after.
//! Failures are retried with a per-key exponential backoff. A key can be added as urgent: it is
//! taken before every key that is not (new pods get their host copy before running pods get
//! their status).

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use crate::metrics::{Metrics, QueueMetrics};

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
    metrics: QueueMetrics,
}

struct State<K> {
    urgent: VecDeque<K>,
    /// May hold keys since made urgent: `queued` tells which entry counts.
    pending: VecDeque<K>,
    /// Keys waiting, and whether they wait as urgent.
    queued: HashMap<K, bool>,
    active: HashSet<K>,
    /// Added while active, and whether as urgent: queued again when done.
    dirty: HashMap<K, bool>,
    failures: HashMap<K, u32>,
    /// Keys taken so far, for [`REST_EVERY`].
    taken: u64,
}

/// One key in this many is taken from the keys not urgent, when some wait.
const REST_EVERY: u64 = 8;

impl<K: Hash + Eq + Clone> State<K> {
    /// Queues `key` (urgent or not) unless it waits already; an urgent add moves a waiting key
    /// ahead. Returns whether a worker has something new to take.
    fn queue(&mut self, key: K, urgent: bool) -> bool {
        if self.active.contains(&key) {
            let dirty = self.dirty.entry(key).or_insert(false);
            *dirty |= urgent;
            return false;
        }
        match self.queued.get(&key) {
            Some(true) => false,
            Some(false) if !urgent => false,
            _ => {
                self.queued.insert(key.clone(), urgent);
                if urgent {
                    self.urgent.push_back(key);
                } else {
                    self.pending.push_back(key);
                }
                true
            }
        }
    }

    /// The next key to work on: urgent ones first, except that every [`REST_EVERY`]th key is
    /// taken from the others while any wait, so that a steady stream of urgent keys does not
    /// starve them.
    fn take(&mut self) -> Option<K> {
        self.taken = self.taken.wrapping_add(1);
        if self.taken.is_multiple_of(REST_EVERY)
            && let Some(key) = self.take_from(false)
        {
            return Some(key);
        }
        self.take_from(true).or_else(|| self.take_from(false))
    }

    /// The first key waiting as `urgent` (or not); entries left behind by a move are skipped.
    fn take_from(&mut self, urgent: bool) -> Option<K> {
        let deque = if urgent {
            &mut self.urgent
        } else {
            &mut self.pending
        };
        while let Some(key) = deque.pop_front() {
            if self.queued.get(&key) == Some(&urgent) {
                return Some(self.start(key));
            }
        }
        None
    }

    fn start(&mut self, key: K) -> K {
        self.queued.remove(&key);
        self.active.insert(key.clone());
        key
    }
}

impl<K: Hash + Eq + Clone + Send + Sync + std::fmt::Debug + 'static> WorkQueue<K> {
    pub fn new(name: &'static str, metrics: &Metrics) -> Arc<Self> {
        Arc::new(Self {
            name,
            metrics: metrics.queue(name),
            state: Mutex::new(State {
                urgent: VecDeque::new(),
                pending: VecDeque::new(),
                queued: HashMap::new(),
                active: HashSet::new(),
                dirty: HashMap::new(),
                failures: HashMap::new(),
                taken: 0,
            }),
            notify: Notify::new(),
        })
    }

    pub fn add(&self, key: K) {
        self.queue(key, false);
    }

    /// Adds `key` ahead of every key not added as urgent.
    pub fn add_urgent(&self, key: K) {
        self.queue(key, true);
    }

    fn queue(&self, key: K, urgent: bool) {
        let new = {
            let mut state = self.state.lock().expect("queue lock");
            let new = state.queue(key, urgent);
            self.metrics.depth.set(state.queued.len() as i64);
            new
        };
        if new {
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
        self.state.lock().expect("queue lock").queued.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    async fn next(&self) -> K {
        loop {
            let notified = self.notify.notified();
            {
                let mut state = self.state.lock().expect("queue lock");
                if let Some(key) = state.take() {
                    self.metrics.depth.set(state.queued.len() as i64);
                    if !state.queued.is_empty() {
                        // Wake another worker for the rest.
                        self.notify.notify_one();
                    }
                    return key;
                }
            }
            notified.await;
        }
    }

    fn done(self: &Arc<Self>, key: &K, outcome: anyhow::Result<Next>, took: Duration) {
        self.metrics.reconciles.inc();
        self.metrics.duration.observe(took.as_secs_f64());
        if outcome.is_err() {
            self.metrics.errors.inc();
        }
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
            if let Some(urgent) = state.dirty.remove(key) {
                drop(state);
                self.queue(key.clone(), urgent);
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
                    let started = std::time::Instant::now();
                    let outcome = reconcile(key.clone()).await;
                    queue.done(&key, outcome, started.elapsed());
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
        let metrics = Metrics::default();
        let queue = WorkQueue::<u32>::new("test", &metrics);
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
        let counted = metrics.queue("test");
        assert_eq!(counted.reconciles.get(), 3);
        assert_eq!(counted.errors.get(), 1);
        assert_eq!(counted.depth.get(), 0);
    }

    #[test]
    fn urgent_keys_are_taken_first_and_a_key_made_urgent_once() {
        let queue = WorkQueue::<u32>::new("test", &Metrics::default());
        queue.add(1);
        queue.add(2);
        queue.add(3);
        queue.add_urgent(4);
        // 2 waits already: it moves ahead, and its old place no longer counts.
        queue.add_urgent(2);
        // Adding it again, urgent or not, changes nothing.
        queue.add(2);
        queue.add_urgent(2);
        assert_eq!(queue.len(), 4);
        let mut state = queue.state.lock().unwrap();
        let order: Vec<u32> = std::iter::from_fn(|| state.take()).collect();
        assert_eq!(order, vec![4, 2, 1, 3]);
        // Added while active: queued again when done, as urgent if any add was.
        assert!(!state.queue(1, false));
        assert!(!state.queue(1, true));
        assert_eq!(state.dirty.get(&1), Some(&true));
    }

    #[test]
    fn a_stream_of_urgent_keys_does_not_starve_the_others() {
        let queue = WorkQueue::<u32>::new("test", &Metrics::default());
        queue.add(0);
        for key in 1..=10 {
            queue.add_urgent(key);
        }
        let mut state = queue.state.lock().unwrap();
        let order: Vec<u32> = std::iter::from_fn(|| state.take()).collect();
        assert_eq!(order, vec![1, 2, 3, 4, 5, 6, 7, 0, 8, 9, 10]);
    }
}
