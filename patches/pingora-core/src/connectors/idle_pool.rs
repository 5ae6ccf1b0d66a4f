// Copyright 2026 Cloudflare, Inc.
//
// Licensed under the Apache License, Version 2.0 (the "License");
// you may not use this file except in compliance with the License.
// You may obtain a copy of the License at
//
// http://www.apache.org/licenses/LICENSE-2.0
//
// Unless required by applicable law or agreed to in writing, software
// distributed under the License is distributed on an "AS IS" BASIS,
// WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
// See the License for the specific language governing permissions and
// limitations under the License.

//! Idle upstream streams kept for reuse, without a task per stream
//!
//! A released stream is stored with the time it became idle and its deadline. Nothing watches it
//! while it waits: whoever takes it checks it first (the deadline, then that the server has not
//! closed it or sent anything), and a stream that fails is dropped and the next one tried. One
//! sweeper task per pool, started by the first release, drops streams past their deadline and
//! those the server has closed, once every [`SWEEP_INTERVAL`]. The pool holds at most `size`
//! streams; releasing one more drops the least recently released.

use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// How often the sweeper looks at the idle streams.
pub(crate) const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Tells whether an idle stream can still be used (nothing read, not closed).
pub(crate) type Usable<S> = Box<dyn Fn(&mut S) -> bool + Send + Sync>;

/// Called with how long a stream was idle when the pool drops it to make room.
pub(crate) type OnEvict = Arc<dyn Fn(Duration) + Send + Sync>;

struct Idle<S> {
    key: u64,
    stream: S,
    since: Instant,
    deadline: Option<Instant>,
}

impl<S> Idle<S> {
    fn expired(&self, now: Instant) -> bool {
        self.deadline.is_some_and(|d| now >= d)
    }
}

/// The keys are already hashes (`Peer::reuse_hash`): they are used as they are.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

struct Inner<S> {
    next: u64,
    /// Every idle stream by the order it was released in, least recent first.
    order: BTreeMap<u64, Idle<S>>,
    /// The idle streams of each key (their places in `order`), least recent first. A key whose
    /// list is empty stays until the next sweep, so that a key whose streams come and go does
    /// not allocate its list each time.
    by_key: HashMap<u64, Vec<u64>, BuildHasherDefault<KeyHasher>>,
}

impl<S> Inner<S> {
    fn remove(&mut self, seq: u64) -> Option<Idle<S>> {
        let idle = self.order.remove(&seq)?;
        if let Some(seqs) = self.by_key.get_mut(&idle.key) {
            if let Some(i) = seqs.iter().position(|s| *s == seq) {
                seqs.remove(i);
            }
        }
        Some(idle)
    }
}

/// Idle streams by key, bounded, checked when taken.
pub(crate) struct IdlePool<S> {
    size: usize,
    inner: Mutex<Inner<S>>,
    usable: Usable<S>,
    on_evict: Option<OnEvict>,
    sweeping: AtomicBool,
}

impl<S: Send + 'static> IdlePool<S> {
    pub(crate) fn new(size: usize, usable: Usable<S>, on_evict: Option<OnEvict>) -> Self {
        IdlePool {
            size,
            inner: Mutex::new(Inner {
                next: 0,
                order: BTreeMap::new(),
                by_key: HashMap::default(),
            }),
            usable,
            on_evict,
            sweeping: AtomicBool::new(false),
        }
    }

    /// The number of idle streams held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.inner.lock().order.len()
    }

    /// Keep `stream` for reuse under `key`, until `idle_timeout` (none: until the server closes
    /// it or the pool needs the room). Starts the sweeper if it is not running.
    pub(crate) fn put(self: &Arc<Self>, key: u64, stream: S, idle_timeout: Option<Duration>) {
        if self.size == 0 {
            return;
        }
        let since = Instant::now();
        let idle = Idle {
            key,
            stream,
            since,
            deadline: idle_timeout.and_then(|t| since.checked_add(t)),
        };
        let evicted = {
            let mut inner = self.inner.lock();
            let evicted = if inner.order.len() >= self.size {
                inner.order.pop_first().map(|(seq, evicted)| {
                    if let Some(seqs) = inner.by_key.get_mut(&evicted.key) {
                        // the least recent stream of all is the least recent of its key
                        if let Some(i) = seqs.iter().position(|s| *s == seq) {
                            seqs.remove(i);
                        }
                    }
                    evicted
                })
            } else {
                None
            };
            let seq = inner.next;
            inner.next += 1;
            inner.order.insert(seq, idle);
            inner.by_key.entry(key).or_default().push(seq);
            evicted
        };
        if let Some(evicted) = evicted {
            if let Some(on_evict) = &self.on_evict {
                on_evict(evicted.since.elapsed());
            }
        }
        self.start_sweeper();
    }

    /// The most recently released stream under `key` that is within its idle timeout and still
    /// usable; those found expired or unusable on the way are dropped.
    pub(crate) fn get(&self, key: u64) -> Option<S> {
        loop {
            let idle = {
                let mut inner = self.inner.lock();
                let seq = inner.by_key.get_mut(&key)?.pop()?;
                inner.order.remove(&seq)?
            };
            // checked and dropped outside the lock
            let mut stream = idle.stream;
            if !idle.deadline.is_some_and(|d| Instant::now() >= d) && (self.usable)(&mut stream) {
                return Some(stream);
            }
        }
    }

    /// Drop the streams past their deadline at `now` and those no longer usable, and forget
    /// keys without streams.
    pub(crate) fn sweep(&self, now: Instant) {
        let dropped: Vec<Idle<S>> = {
            let mut inner = self.inner.lock();
            let mut gone = Vec::new();
            for (seq, idle) in inner.order.iter_mut() {
                if idle.expired(now) || !(self.usable)(&mut idle.stream) {
                    gone.push(*seq);
                }
            }
            let dropped = gone
                .into_iter()
                .filter_map(|seq| inner.remove(seq))
                .collect();
            inner.by_key.retain(|_, seqs| !seqs.is_empty());
            dropped
        };
        drop(dropped);
    }

    fn start_sweeper(self: &Arc<Self>) {
        if self.sweeping.load(Ordering::Relaxed) || self.sweeping.swap(true, Ordering::AcqRel) {
            return;
        }
        let pool = Arc::downgrade(self);
        pingora_runtime::current_handle().spawn(async move {
            // let a later release start another if this task ends with its runtime
            let _running = Sweeping(pool.clone());
            loop {
                tokio::time::sleep(SWEEP_INTERVAL).await;
                match pool.upgrade() {
                    Some(pool) => pool.sweep(Instant::now()),
                    None => return,
                }
            }
        });
    }
}

struct Sweeping<S>(Weak<IdlePool<S>>);

impl<S> Drop for Sweeping<S> {
    fn drop(&mut self) {
        if let Some(pool) = self.0.upgrade() {
            pool.sweeping.store(false, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// A stream that is usable while its flag is set.
    struct Fake {
        id: u32,
        open: Arc<AtomicBool>,
    }

    fn fake(id: u32) -> (Fake, Arc<AtomicBool>) {
        let open = Arc::new(AtomicBool::new(true));
        (
            Fake {
                id,
                open: open.clone(),
            },
            open,
        )
    }

    fn pool(size: usize, on_evict: Option<OnEvict>) -> Arc<IdlePool<Fake>> {
        Arc::new(IdlePool::new(
            size,
            Box::new(|s: &mut Fake| s.open.load(Ordering::Relaxed)),
            on_evict,
        ))
    }

    #[tokio::test]
    async fn streams_are_reused_by_key_most_recent_first() {
        let pool = pool(8, None);
        pool.put(1, fake(10).0, None);
        pool.put(2, fake(20).0, None);
        pool.put(1, fake(11).0, None);
        assert_eq!(pool.get(1).unwrap().id, 11);
        assert_eq!(pool.get(1).unwrap().id, 10);
        assert!(pool.get(1).is_none());
        assert_eq!(pool.get(2).unwrap().id, 20);
        assert!(pool.get(3).is_none());
        assert_eq!(pool.len(), 0);
    }

    #[tokio::test]
    async fn a_stream_closed_while_idle_is_never_handed_out() {
        let pool = pool(8, None);
        let (first, _) = fake(1);
        let (second, second_open) = fake(2);
        pool.put(7, first, None);
        pool.put(7, second, None);
        // the server closes the most recent one: it is dropped and the next one is taken
        second_open.store(false, Ordering::Relaxed);
        assert_eq!(pool.get(7).unwrap().id, 1);
        assert!(pool.get(7).is_none());
        assert_eq!(pool.len(), 0);
    }

    #[tokio::test]
    async fn a_stream_past_its_idle_timeout_is_never_handed_out() {
        let pool = pool(8, None);
        pool.put(7, fake(1).0, Some(Duration::from_secs(3600)));
        pool.put(7, fake(2).0, Some(Duration::ZERO));
        assert_eq!(pool.get(7).unwrap().id, 1);
        assert!(pool.get(7).is_none());
    }

    #[tokio::test]
    async fn the_sweep_drops_expired_and_closed_streams_and_keeps_the_rest() {
        let pool = pool(8, None);
        let (closed, closed_open) = fake(1);
        pool.put(1, closed, None);
        pool.put(1, fake(2).0, Some(Duration::from_millis(10)));
        pool.put(2, fake(3).0, Some(Duration::from_secs(3600)));
        pool.put(3, fake(4).0, None);
        closed_open.store(false, Ordering::Relaxed);
        pool.sweep(Instant::now() + Duration::from_secs(1));
        assert_eq!(pool.len(), 2);
        assert!(pool.get(1).is_none());
        assert_eq!(pool.get(2).unwrap().id, 3);
        assert_eq!(pool.get(3).unwrap().id, 4);
        // keys left without streams are forgotten
        pool.sweep(Instant::now());
        assert!(pool.inner.lock().by_key.is_empty());
    }

    #[tokio::test]
    async fn the_pool_is_bounded_and_drops_the_least_recently_released() {
        let evicted = Arc::new(AtomicUsize::new(0));
        let counted = evicted.clone();
        let pool = pool(
            2,
            Some(Arc::new(move |_| {
                counted.fetch_add(1, Ordering::Relaxed);
            })),
        );
        let (oldest, oldest_open) = fake(1);
        pool.put(1, oldest, None);
        pool.put(2, fake(2).0, None);
        pool.put(1, fake(3).0, None);
        assert_eq!(pool.len(), 2);
        assert_eq!(evicted.load(Ordering::Relaxed), 1);
        // the evicted stream was dropped, not kept
        assert_eq!(Arc::strong_count(&oldest_open), 1);
        assert_eq!(pool.get(1).unwrap().id, 3);
        assert!(pool.get(1).is_none());
        assert_eq!(pool.get(2).unwrap().id, 2);

        let none = pool_of_zero();
        none.put(1, fake(1).0, None);
        assert!(none.get(1).is_none());
    }

    fn pool_of_zero() -> Arc<IdlePool<Fake>> {
        pool(0, None)
    }

    #[tokio::test]
    async fn the_sweeper_runs_without_releases_and_ends_with_the_pool() {
        let pool = pool(8, None);
        let (stream, open) = fake(1);
        pool.put(1, stream, None);
        assert!(pool.sweeping.load(Ordering::Relaxed));
        open.store(false, Ordering::Relaxed);
        // the closed stream goes at the next sweep, with no request taking it
        let started = Instant::now();
        while pool.len() > 0 && started.elapsed() < SWEEP_INTERVAL * 5 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(pool.len(), 0);
        assert!(started.elapsed() >= SWEEP_INTERVAL / 2);
        assert_eq!(Arc::strong_count(&open), 1);
        // one sweeper (its handles on the pool are weak ones), whatever the number of releases
        let handles = Arc::weak_count(&pool);
        assert!(handles > 0);
        pool.put(1, fake(2).0, None);
        pool.put(2, fake(3).0, None);
        assert_eq!(Arc::weak_count(&pool), handles);
        let sweeping = Arc::downgrade(&pool);
        drop(pool);
        // the sweeper holds no strong reference: the pool is gone at once
        assert!(sweeping.upgrade().is_none());
    }
}
