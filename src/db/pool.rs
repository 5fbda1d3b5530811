//! A small blocking connection pool shared by the dialects: at most `max_open` connections, at
//! most `max_idle` kept idle, each replaced after `max_lifetime`. Connections are made outside the
//! pool's lock, so a slow database never blocks callers that could use an idle connection.
// Parts used only by PostgreSQL/MySQL are unused in a SQLite-only build.
#![cfg_attr(not(any(feature = "postgres", feature = "mysql")), allow(dead_code))]

use super::error::Error;
use std::ops::{Deref, DerefMut};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub max_open: usize,
    pub max_idle: usize,
    pub max_lifetime: Duration,
    /// How long a caller waits for a connection when `max_open` are in use.
    pub wait: Duration,
}

type Connect<C> = Box<dyn Fn() -> Result<C, Error> + Send + Sync>;

pub(crate) struct Pool<C> {
    connect: Connect<C>,
    limits: Limits,
    state: Mutex<State<C>>,
    freed: Condvar,
}

struct State<C> {
    idle: Vec<Entry<C>>,
    open: usize,
}

struct Entry<C> {
    conn: C,
    born: Instant,
}

/// A connection taken from the pool; it goes back on drop unless marked broken.
pub(crate) struct Pooled<'a, C> {
    pool: &'a Pool<C>,
    entry: Option<Entry<C>>,
    broken: bool,
    reused: bool,
}

impl<C> Pool<C> {
    pub fn new(limits: Limits, connect: Connect<C>) -> Pool<C> {
        let limits = Limits {
            max_open: limits.max_open.max(1),
            max_idle: limits.max_idle.min(limits.max_open.max(1)),
            ..limits
        };
        Pool {
            connect,
            limits,
            state: Mutex::new(State {
                idle: Vec::new(),
                open: 0,
            }),
            freed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<C>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Puts an already made connection into the pool (e.g. the one that ran the migrations).
    pub fn seed(&self, conn: C) {
        let mut state = self.lock();
        if state.open < self.limits.max_open && state.idle.len() < self.limits.max_idle {
            state.open += 1;
            state.idle.push(Entry {
                conn,
                born: Instant::now(),
            });
        }
    }

    pub fn get(&self) -> Result<Pooled<'_, C>, Error> {
        let deadline = Instant::now() + self.limits.wait;
        let mut state = self.lock();
        loop {
            while let Some(entry) = state.idle.pop() {
                if entry.born.elapsed() < self.limits.max_lifetime {
                    return Ok(Pooled {
                        pool: self,
                        entry: Some(entry),
                        broken: false,
                        reused: true,
                    });
                }
                state.open -= 1;
            }
            if state.open < self.limits.max_open {
                state.open += 1;
                drop(state);
                return match (self.connect)() {
                    Ok(conn) => Ok(Pooled {
                        pool: self,
                        entry: Some(Entry {
                            conn,
                            born: Instant::now(),
                        }),
                        broken: false,
                        reused: false,
                    }),
                    Err(e) => {
                        self.lock().open -= 1;
                        self.freed.notify_one();
                        Err(e)
                    }
                };
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::Database(format!(
                    "no database connection free within {:?} (max_open_connections {})",
                    self.limits.wait, self.limits.max_open
                )));
            }
            state = self
                .freed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

impl<C> Pool<C> {
    /// Closes every idle connection (after one turned out dead, e.g. across a database restart,
    /// the others most likely are too).
    pub fn discard_idle(&self) {
        let mut state = self.lock();
        let n = state.idle.len();
        state.idle.clear();
        state.open -= n;
        drop(state);
        self.freed.notify_all();
    }
}

impl<C> Pooled<'_, C> {
    /// The connection is not given back (e.g. after an I/O error); a new one replaces it.
    pub fn mark_broken(&mut self) {
        self.broken = true;
    }

    /// Whether the connection came from the idle list (it may have gone stale meanwhile, e.g.
    /// across a database restart) rather than being made just now.
    pub fn reused(&self) -> bool {
        self.reused
    }
}

impl<C> Deref for Pooled<'_, C> {
    type Target = C;
    fn deref(&self) -> &C {
        &self.entry.as_ref().expect("pooled connection present").conn
    }
}

impl<C> DerefMut for Pooled<'_, C> {
    fn deref_mut(&mut self) -> &mut C {
        &mut self.entry.as_mut().expect("pooled connection present").conn
    }
}

impl<C> Drop for Pooled<'_, C> {
    fn drop(&mut self) {
        let Some(entry) = self.entry.take() else {
            return;
        };
        let mut state = self.pool.lock();
        let keep = !self.broken
            && state.idle.len() < self.pool.limits.max_idle
            && entry.born.elapsed() < self.pool.limits.max_lifetime;
        if keep {
            state.idle.push(entry);
        } else {
            state.open -= 1;
        }
        drop(state);
        self.pool.freed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    fn pool(max_open: usize, max_idle: usize, made: Arc<AtomicUsize>) -> Pool<usize> {
        Pool::new(
            Limits {
                max_open,
                max_idle,
                max_lifetime: Duration::from_secs(60),
                wait: Duration::from_millis(50),
            },
            Box::new(move || Ok(made.fetch_add(1, Ordering::SeqCst))),
        )
    }

    #[test]
    fn reuses_idle_connections_and_bounds_open_ones() {
        let made = Arc::new(AtomicUsize::new(0));
        let p = pool(2, 1, made.clone());
        let a = p.get().unwrap();
        let b = p.get().unwrap();
        let err = p.get().err().expect("third connection must wait and fail");
        assert!(err.to_string().contains("max_open_connections 2"), "{err}");
        drop(a);
        drop(b); // only one is kept idle
        let c = p.get().unwrap();
        assert!(c.reused());
        assert_eq!(made.load(Ordering::SeqCst), 2);
        assert_eq!(*c, 0);
        drop(c);
        let mut d = p.get().unwrap();
        d.mark_broken();
        drop(d);
        let e = p.get().unwrap();
        assert_eq!(*e, 2, "a broken connection is replaced");
    }
}
