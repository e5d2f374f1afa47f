//! A replica's right to write: the fence every write to the API server and every registry
//! write passes.
//!
//! With leader election, a leader may write only until its renew deadline (counted from
//! the start of its last successful renewal), which ends before any follower may take the
//! Lease over. A leader that cannot renew in time (its requests hang, or the process was
//! paused past its lease) therefore stops writing on its own monotonic clock, before
//! another replica can start: its writes are refused here even if its reconciles run on
//! for a moment before it notices and exits. Without leader election the fence is open.

use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Until when this replica may write. Clones share the deadline.
#[derive(Debug, Clone, Default)]
pub struct Fence {
    /// `None` inside: closed. No inner at all: always open.
    until: Option<Arc<Mutex<Option<Instant>>>>,
}

/// A write refused because this replica's leadership lapsed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("not writing: this replica could not renew its leader lease in time (another replica may lead now)")]
pub struct Fenced;

impl Fence {
    /// A fence that always lets writes through (no leader election).
    pub fn open() -> Self {
        Self { until: None }
    }

    /// A fence closed until [`Fence::extend`] opens it.
    pub fn closed() -> Self {
        Self { until: Some(Arc::new(Mutex::new(None))) }
    }

    /// Lets writes through until `until`.
    pub fn extend(&self, until: Instant) {
        if let Some(inner) = &self.until
            && let Ok(mut at) = inner.lock()
        {
            *at = Some(until);
        }
    }

    /// Closes the fence now.
    pub fn close(&self) {
        if let Some(inner) = &self.until
            && let Ok(mut at) = inner.lock()
        {
            *at = None;
        }
    }

    /// Whether a write may go now.
    pub fn check(&self) -> Result<(), Fenced> {
        let Some(inner) = &self.until else { return Ok(()) };
        let until = inner.lock().map(|at| *at).unwrap_or(None);
        match until {
            Some(until) if Instant::now() < until => Ok(()),
            _ => Err(Fenced),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn writes_pass_only_before_the_deadline() {
        assert!(Fence::open().check().is_ok());
        let fence = Fence::closed();
        assert!(fence.check().is_err(), "closed until the lease is won");
        let shared = fence.clone();
        fence.extend(Instant::now() + Duration::from_secs(60));
        assert!(shared.check().is_ok(), "clones share the deadline");
        fence.extend(Instant::now() - Duration::from_millis(1));
        assert!(shared.check().is_err(), "past the deadline");
        fence.extend(Instant::now() + Duration::from_secs(60));
        fence.close();
        assert!(shared.check().is_err());
    }
}
