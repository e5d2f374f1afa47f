//! What the daemon knows about its own health, shared by the parts that learn it (the
//! leader election, the controllers, each reconcile) and the HTTP server that reports it
//! on `/livez` and `/readyz`. One value passed to each, no process-wide state.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// This replica's role, as readiness reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Leader election has not decided yet.
    Unknown = 0,
    /// Reconciling (it leads, or election is off).
    Leader = 1,
    /// Standing by for the leader.
    Follower = 2,
}

/// Whether the controllers' caches have listed everything once, and how to refresh the
/// metrics computed from them.
type Probe = Box<dyn Fn() -> bool + Send + Sync>;
type Refresh = Box<dyn Fn() + Send + Sync>;

/// The reconciles running now: the last id given, and id → (what, since when).
#[derive(Default)]
struct InFlight(u64, HashMap<u64, (String, Instant)>);

/// The daemon's health.
pub struct Health {
    role: AtomicU8,
    caches: RwLock<Option<(Probe, Refresh)>>,
    /// The reconciles running now.
    running: Mutex<InFlight>,
    /// How long a reconcile may run before the process counts as wedged.
    stall_after: Duration,
}

/// What `/livez` reports when a reconcile has run too long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stalled {
    /// The object being reconciled.
    pub what: String,
    /// For how long.
    pub running_for: Duration,
}

impl Health {
    /// A daemon whose reconciles count as wedged after running `stall_after`.
    pub fn new(stall_after: Duration) -> Arc<Self> {
        Arc::new(Self {
            role: AtomicU8::new(Role::Unknown as u8),
            caches: RwLock::new(None),
            running: Mutex::default(),
            stall_after,
        })
    }

    /// Records this replica's role.
    pub fn set_role(&self, role: Role) {
        self.role.store(role as u8, Ordering::Relaxed);
    }

    /// This replica's role.
    pub fn role(&self) -> Role {
        match self.role.load(Ordering::Relaxed) {
            1 => Role::Leader,
            2 => Role::Follower,
            _ => Role::Unknown,
        }
    }

    /// Registers the controllers' caches: `synced` says whether they listed everything
    /// once, `refresh` updates the metrics computed from them before each scrape.
    pub fn watch_caches(
        &self,
        synced: impl Fn() -> bool + Send + Sync + 'static,
        refresh: impl Fn() + Send + Sync + 'static,
    ) {
        if let Ok(mut caches) = self.caches.write() {
            *caches = Some((Box::new(synced), Box::new(refresh)));
        }
    }

    /// Whether the caches listed everything once (false before they are registered).
    pub fn synced(&self) -> bool {
        self.caches.read().ok().and_then(|c| c.as_ref().map(|(synced, _)| synced())).unwrap_or(false)
    }

    /// Updates the metrics computed from the caches.
    pub fn refresh_metrics(&self) {
        if let Ok(caches) = self.caches.read()
            && let Some((_, refresh)) = caches.as_ref()
        {
            refresh();
        }
    }

    /// Notes that a reconcile of `what` runs until the returned guard is dropped.
    pub fn reconciling(self: &Arc<Self>, what: String) -> Running {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        running.0 += 1;
        let id = running.0;
        running.1.insert(id, (what, Instant::now()));
        Running { health: self.clone(), id }
    }

    /// The reconcile that has run longest, if longer than the stall threshold: the
    /// controller makes no progress on it, and a restart is the way out.
    pub fn stalled(&self) -> Option<Stalled> {
        let running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        running
            .1
            .values()
            .map(|(what, since)| Stalled { what: what.clone(), running_for: since.elapsed() })
            .max_by_key(|s| s.running_for)
            .filter(|s| s.running_for > self.stall_after)
    }

    /// The stall threshold.
    pub fn stall_after(&self) -> Duration {
        self.stall_after
    }
}

/// A running reconcile (see [`Health::reconciling`]).
pub struct Running {
    health: Arc<Health>,
    id: u64,
}

impl Drop for Running {
    fn drop(&mut self) {
        let mut running = self.health.running.lock().unwrap_or_else(|e| e.into_inner());
        running.1.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reconcile_running_past_the_threshold_is_a_stall() {
        let health = Health::new(Duration::from_millis(20));
        assert_eq!(health.stalled(), None);
        let quick = health.reconciling("ImageRelease ns/quick".into());
        drop(quick);
        let slow = health.reconciling("ImageRelease ns/slow".into());
        std::thread::sleep(Duration::from_millis(30));
        let stalled = health.stalled().expect("stalled");
        assert_eq!(stalled.what, "ImageRelease ns/slow");
        assert!(stalled.running_for >= Duration::from_millis(30));
        drop(slow);
        assert_eq!(health.stalled(), None, "finished reconciles do not count");
    }

    #[test]
    fn roles_and_readiness() {
        let health = Health::new(Duration::from_secs(60));
        assert_eq!(health.role(), Role::Unknown);
        health.set_role(Role::Follower);
        assert_eq!(health.role(), Role::Follower);
        assert!(!health.synced(), "not synced before the caches exist");
        health.watch_caches(|| true, || {});
        assert!(health.synced());
    }
}
