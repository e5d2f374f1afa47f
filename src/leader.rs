//! Leader election on a `coordination.k8s.io/v1` Lease, so that of several replicas only
//! one reconciles.
//!
//! The algorithm is client-go's: a candidate takes the Lease when it does not exist, or
//! when its record (holder and renew time) has not changed for a whole lease duration as
//! measured on the candidate's own clock (so clock skew between replicas does not matter).
//! Every write is a replace carrying the resourceVersion that was read, so of two
//! candidates racing for an expired Lease exactly one wins. The leader renews every
//! `renew_every`, each round bounded by a timeout; if it cannot renew within
//! `renew_deadline` (shorter than the lease duration) it has lost the Lease, and the
//! process exits so that it restarts as a follower with a clean slate. Its writes stop
//! earlier still: the [`Fence`] every write passes closes at the renew deadline on the
//! leader's own monotonic clock, before any follower may take over, even if the process
//! was paused and its reconciles run on for a moment before it notices. A leader that
//! stops on purpose (SIGTERM: a rollout, a drain, a deleted pod) releases the Lease after
//! its controllers have stopped, so a follower takes over at its next look instead of
//! waiting out the lease duration.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tracing::{debug, info, warn};

use crate::fence::Fence;
use crate::health::{Health, Role};
use crate::metrics::METRICS;

/// Settings of the election.
#[derive(Debug, Clone)]
pub struct Election {
    /// Name of the Lease.
    pub lease_name: String,
    /// Namespace of the Lease.
    pub namespace: String,
    /// Who this replica is (the pod name in a cluster).
    pub identity: String,
    /// How long a Lease stays valid without renewal.
    pub lease_duration: Duration,
    /// How often the leader renews, and a follower looks again.
    pub renew_every: Duration,
    /// How long after the start of its last successful renewal the leader may go on
    /// writing; less than `lease_duration`, so it stops before a follower may start.
    pub renew_deadline: Duration,
}

impl Election {
    /// An election for `identity` on Lease `lease_name` in `namespace`, with client-go's
    /// proportions: renew every third of the lease duration, stop writing after two
    /// thirds of it without a renewal.
    pub fn new(lease_name: String, namespace: String, identity: String, lease_duration: Duration) -> Self {
        Self {
            lease_name,
            namespace,
            identity,
            lease_duration,
            renew_every: (lease_duration / 3).max(Duration::from_millis(500)),
            renew_deadline: lease_duration * 2 / 3,
        }
    }
}

/// What a candidate knows of the Lease.
struct Observed {
    holder: Option<String>,
    renew_time: Option<MicroTime>,
    at: Instant,
}

/// A candidate for leadership.
pub struct Candidate {
    api: Api<Lease>,
    election: Election,
    observed: Option<Observed>,
    /// Opened until the renew deadline by each successful renewal.
    fence: Fence,
    /// When the last successful acquisition or renewal started.
    renewed_at: Option<Instant>,
    /// Where this replica's role is reported.
    health: Arc<Health>,
}

fn now() -> MicroTime {
    MicroTime(jiff::Timestamp::now())
}

impl Candidate {
    /// A candidate in `election`, which opens `fence` while it leads and reports its role
    /// to `health`.
    pub fn new(client: Client, election: Election, fence: Fence, health: Arc<Health>) -> Self {
        let api = Api::namespaced(client, &election.namespace);
        Candidate { api, election, observed: None, fence, renewed_at: None, health }
    }

    /// One round of [`Candidate::try_lead`], given at most `limit`: whether this replica
    /// leads now, or why it could not tell. A success opens the fence until the renew
    /// deadline, counted from the round's start.
    async fn round(&mut self, limit: Duration) -> Result<bool, String> {
        let started = Instant::now();
        let outcome = match tokio::time::timeout(limit, self.try_lead()).await {
            Ok(Ok(leads)) => Ok(leads),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer from the API server within {limit:?}")),
        };
        if outcome == Ok(true) {
            self.renewed_at = Some(started);
            self.fence.extend(started + self.election.renew_deadline);
        }
        outcome
    }

    fn lease(&self, holder: &str, transitions: i32, acquired: Option<MicroTime>) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.to_string()),
            lease_duration_seconds: Some(self.election.lease_duration.as_secs().max(1) as i32),
            acquire_time: acquired.or_else(|| Some(now())),
            renew_time: Some(now()),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }

    /// Acquires or renews the Lease if it can. Returns whether this replica leads now.
    async fn try_lead(&mut self) -> Result<bool, kube::Error> {
        let me = self.election.identity.clone();
        let Some(mut lease) = self.api.get_opt(&self.election.lease_name).await? else {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(self.election.lease_name.clone()), ..Default::default() },
                spec: Some(self.lease(&me, 0, None)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        // Note when the record last changed, on our own clock.
        let changed = self.observed.as_ref().is_none_or(|o| o.holder != holder || o.renew_time != spec.renew_time);
        if changed {
            self.observed =
                Some(Observed { holder: holder.clone(), renew_time: spec.renew_time.clone(), at: Instant::now() });
        }
        let held_by_me = holder.as_deref() == Some(me.as_str());
        let duration = spec
            .lease_duration_seconds
            .map(|s| Duration::from_secs(s.max(1) as u64))
            .unwrap_or(self.election.lease_duration);
        let expired = holder.is_none() || self.observed.as_ref().is_some_and(|o| o.at.elapsed() > duration);
        if !held_by_me && !expired {
            return Ok(false);
        }
        let (transitions, acquired) = if held_by_me {
            (spec.lease_transitions.unwrap_or(0), spec.acquire_time.clone())
        } else {
            (spec.lease_transitions.unwrap_or(0) + 1, None)
        };
        lease.spec = Some(self.lease(&me, transitions, acquired));
        match self.api.replace(&self.election.lease_name, &PostParams::default(), &lease).await {
            Ok(_) => {
                if !held_by_me {
                    info!(lease = %self.election.lease_name, previous = ?holder, "took over the expired lease");
                }
                Ok(true)
            }
            // Someone else wrote in between: they won this round.
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Waits until this replica leads. Readiness reports a follower meanwhile.
    pub async fn acquire(&mut self) {
        loop {
            match self.round(self.election.renew_deadline).await {
                Ok(true) => {
                    info!(identity = %self.election.identity, lease = %self.election.lease_name, "leading");
                    METRICS.leader.set(1);
                    return;
                }
                Ok(false) => {
                    METRICS.leader.set(0);
                    self.health.set_role(Role::Follower);
                    debug!("following");
                }
                Err(e) => warn!(error = %e, "leader election: could not read or write the lease"),
            }
            tokio::time::sleep(self.election.renew_every).await;
        }
    }

    /// Renews the Lease until it is lost, or not renewed within the renew deadline;
    /// returns then, with the fence closed.
    pub async fn keep(&mut self) {
        loop {
            tokio::time::sleep(self.election.renew_every).await;
            let deadline = self.renewed_at.unwrap_or_else(Instant::now) + self.election.renew_deadline;
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                warn!(deadline = ?self.election.renew_deadline, "the lease was not renewed in time");
                break;
            }
            match self.round(left).await {
                Ok(true) => {}
                Ok(false) => {
                    warn!("another replica holds the lease now");
                    break;
                }
                Err(e) => warn!(error = %e, "could not renew the lease"),
            }
        }
        self.fence.close();
        METRICS.leader.set(0);
    }

    /// Gives the Lease up, if this replica still holds it: clears the holder (what
    /// client-go's `ReleaseOnCancel` does), so that the next candidate to look takes it.
    /// Only a leader whose controllers have stopped may call this.
    pub async fn release(&mut self) {
        self.fence.close();
        let me = self.election.identity.as_str();
        let limit = self.election.renew_deadline;
        let result = tokio::time::timeout(limit, async {
            let Some(mut lease) = self.api.get_opt(&self.election.lease_name).await? else { return Ok(false) };
            let spec = lease.spec.get_or_insert_with(Default::default);
            if spec.holder_identity.as_deref() != Some(me) {
                return Ok(false);
            }
            spec.holder_identity = None;
            spec.lease_duration_seconds = Some(1);
            spec.renew_time = Some(now());
            // Carries the resourceVersion read: if someone took it meanwhile, theirs stands.
            self.api.replace(&self.election.lease_name, &PostParams::default(), &lease).await.map(|_| true)
        })
        .await;
        match result {
            Ok(Ok(true)) => info!(lease = %self.election.lease_name, "released the lease"),
            Ok(Ok(false)) => {}
            Ok(Err(e)) => warn!(error = %e, "could not release the lease; a follower takes over when it expires"),
            Err(_) => warn!(?limit, "no answer releasing the lease; a follower takes over when it expires"),
        }
        METRICS.leader.set(0);
    }
}
