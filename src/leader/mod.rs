//! Leader election on a `coordination.k8s.io/v1` Lease: with several replicas only the
//! holder of the Lease runs the controller; the others wait as standbys and take over when the
//! holder stops renewing it (or releases it on shutdown).
//!
//! # Protocol
//!
//! Every write to the Lease is a `create` or a `replace` (`update`) carrying the
//! `resourceVersion` the writer read, so of two concurrent writers exactly one wins and the
//! other gets a `409 Conflict`.
//!
//! * **Standby**: reads the Lease every [`LeaderElection::renew_interval`]. If it does not exist
//!   it creates it naming itself the holder. If it has no holder (released), or names this
//!   identity, it takes it at once. Otherwise it remembers the Lease's `resourceVersion` and the
//!   local monotonic time at which it first saw that version, and takes the Lease only once the
//!   very same version has been current for a whole lease duration (the longer of its own and
//!   the Lease's `leaseDurationSeconds`). Taking a Lease that names this identity at once is
//!   what lets a restarted container of the same pod resume without waiting; it relies on the
//!   identity being unique per live process (`POD_NAME`, or the host name with a random
//!   suffix).
//! * **Leader**: runs the controller, and renews (a replace that sets `renewTime`) every
//!   `renew_interval`. It remembers the local monotonic time at which it *sent* its last
//!   successful renewal (or the acquiring write).
//! * **Stepping down**: without a successful renewal for [`LeaderElection::renew_deadline`]
//!   (2/3 of the duration) since that send time, the leader stops renewing and asks the
//!   controller to stop gracefully; at [`LeaderElection::stop_deadline`] (5/6 of the duration)
//!   the controller task is aborted if it has not finished. A renewal that finds another holder
//!   (or none) aborts the controller at once. Either way the replica becomes a standby again.
//! * **Shutdown**: the leader stops the controller gracefully (renewing meanwhile; aborting it
//!   after one lease duration), then clears the holder, so a standby takes over within one
//!   `renew_interval` instead of a lease duration.
//!
//! # Why two controllers never act at once
//!
//! Let `D` be the lease duration and `s` the local time at which the leader sent the write that
//! produced the Lease version `V` it last wrote successfully. A standby can only take over by
//! replacing a version it has watched unchanged for `D`; any later successful write of the
//! leader changes the version and makes the standby's write fail. So the version the standby
//! replaces is `V` (or a version written by someone else after `V`), and it first saw that
//! version at a time `o` after `V` was written, which is after `s`: the takeover happens no
//! earlier than `o + D > s + D`. The leader has aborted its controller by `s + 5D/6`. Both
//! times are measured with monotonic clocks of the two processes, so only a difference in
//! clock *rate* matters, not an offset between the nodes' wall clocks (`renewTime` is written
//! for humans and other tools but never trusted). The remaining `D/6` (2.5 s at the default
//! 15 s) covers clock rate drift, the time an aborted task takes to stop being polled, and
//! requests already sent when the controller was aborted. Aborting a reconcile is the same as
//! a crash, which the reconciler is built to survive (an `Inviting` user is looked up, not
//! invited again).
//!
//! The argument needs every holder to follow this protocol. Deleting the Lease or clearing its
//! holder by hand lets a standby take it at once, while the old leader notices at its next
//! renewal (within `renew_interval`) and aborts then. A process frozen for longer than the
//! margin (a stopped VM) can issue requests briefly after thawing, before its timers fire; the
//! [`Leadership`] handle lets code check validity right before a side effect to narrow that.
//!
//! # Why not `kube-lease-manager`
//!
//! Its 0.13 release cannot give the guarantee above: in `watch()` mode a failing renewal is
//! logged and retried with a backoff of up to 30 s while the channel keeps saying "leader",
//! so a leader cut off from the API keeps acting indefinitely while a standby takes over after
//! the lease duration; in `changed()` mode successful renewals are invisible, so the time of
//! the last one (the base of any deadline) is unknown. Its renewals and its forced release of
//! an expired Lease are unconditional patches (no `resourceVersion`), and expiry is decided by
//! comparing the holder's `renewTime` with the local wall clock, so node clock skew eats the
//! safety margin directly; durations are whole seconds.

mod lease;
mod term;

use std::{sync::Arc, time::Duration};

use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client};
use tokio::{sync::watch, time::Instant};
use tokio_util::sync::CancellationToken;

use lease::acquire;
use term::{TermEnd, lead};

use crate::health::Readiness;

/// Where and as whom to take part in the election.
#[derive(Clone, Debug)]
pub struct LeaderElection {
    /// Name of the Lease.
    pub lease_name: String,
    /// Namespace of the Lease.
    pub namespace: String,
    /// This replica's identity (the Lease's `holderIdentity`); unique per process.
    pub identity: String,
    /// How long a holder keeps the Lease without renewing it.
    pub lease_duration: Duration,
}

impl LeaderElection {
    /// How often the leader renews and a standby reads the Lease (`D/6`).
    pub fn renew_interval(&self) -> Duration {
        self.lease_duration / 6
    }

    /// How long after its last successful renewal (sent) the leader steps down (`2D/3`).
    pub fn renew_deadline(&self) -> Duration {
        self.lease_duration * 2 / 3
    }

    /// How long after its last successful renewal (sent) the controller is aborted if it has
    /// not stopped gracefully (`5D/6`).
    pub fn stop_deadline(&self) -> Duration {
        self.lease_duration * 5 / 6
    }

    /// Timeout of one request to the Lease API (`D/3`).
    pub fn request_timeout(&self) -> Duration {
        self.lease_duration / 3
    }

    /// The `leaseDurationSeconds` written: whole seconds, rounded up.
    pub fn lease_duration_seconds(&self) -> i32 {
        let millis = self.lease_duration.as_millis().max(1);
        millis.div_ceil(1000).min(i32::MAX as u128) as i32
    }

    /// Rejects settings the protocol cannot work with.
    pub fn validate(&self) -> Result<(), InvalidElection> {
        if self.lease_duration < Duration::from_secs(1) {
            return Err(InvalidElection::ShortLease(humantime::format_duration(
                self.lease_duration,
            )));
        }
        if self.identity.is_empty() {
            return Err(InvalidElection::NoIdentity);
        }
        if self.lease_name.is_empty() || self.namespace.is_empty() {
            return Err(InvalidElection::NoLease);
        }
        Ok(())
    }
}

/// Leader-election settings the protocol cannot work with.
#[derive(thiserror::Error, Debug)]
pub enum InvalidElection {
    /// The lease duration is under a second.
    #[error("the lease duration must be at least 1s, not {0}")]
    ShortLease(humantime::FormattedDuration),
    /// No identity.
    #[error("the leader-election identity must not be empty")]
    NoIdentity,
    /// No lease name or namespace.
    #[error("the lease name and namespace must not be empty")]
    NoLease,
}

/// An identity for a process that was given none: the host name with a random suffix, so two
/// processes on one host never share it.
pub fn default_identity() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.trim().is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
                .filter(|h| !h.is_empty())
        })
        .unwrap_or_else(|| "invite-operator".to_string());
    format!("{}_{:08x}", host.trim(), rand::random::<u32>())
}

/// What the controller of one leadership term gets.
pub struct Term {
    /// The controller's readiness (forwarded to `/readyz` while leading).
    pub readiness: watch::Sender<Readiness>,
    /// Cancelled when the controller must stop gracefully.
    pub stop: CancellationToken,
    /// Whether the lease is still held, for checks right before side effects.
    pub leadership: Leadership,
}

/// Whether this replica still holds the Lease: valid until its renew deadline. Asked right
/// before every call that changes data in an invite API.
#[derive(Clone, Debug, Default)]
pub struct Leadership {
    valid_until: Arc<std::sync::Mutex<Option<Instant>>>,
    unconditional: bool,
}

impl Leadership {
    /// The leadership of a process that runs without leader election: always valid.
    pub fn unconditional() -> Leadership {
        Leadership {
            unconditional: true,
            ..Leadership::default()
        }
    }

    /// A leadership held until `deadline` and never renewed: what a replica whose lease runs
    /// out sees (tests, and embedding the controller under another election).
    pub fn expiring_at(deadline: Instant) -> Leadership {
        let leadership = Leadership::default();
        leadership.set(Some(deadline));
        leadership
    }

    fn set(&self, until: Option<Instant>) {
        *self.valid_until.lock().unwrap_or_else(|e| e.into_inner()) = until;
    }

    /// Until when the lease is held for sure (`None`: not held any more).
    pub fn valid_until(&self) -> Option<Instant> {
        *self.valid_until.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the lease is held for sure right now.
    pub fn is_valid(&self) -> bool {
        self.unconditional || self.valid_until().is_some_and(|t| Instant::now() < t)
    }
}

/// Why [`run_while_leader`] returned early.
#[derive(thiserror::Error, Debug)]
pub enum LeaderError {
    /// The controller returned (or panicked) without being asked to stop.
    #[error("the controller stopped unexpectedly while leading")]
    ControllerExited,
}

/// Takes part in the election until `shutdown` resolves: runs `run` while this replica holds
/// the Lease and stops it (gracefully, then by aborting its task) before the Lease can pass to
/// another replica; then waits as a standby again. On shutdown the controller is stopped and
/// the Lease released so a standby takes over at once.
///
/// `readiness` is what `/readyz` serves: `Ready` while waiting as a standby, the controller's
/// own readiness while leading.
pub async fn run_while_leader<F, Fut>(
    client: Client,
    election: LeaderElection,
    readiness: watch::Sender<Readiness>,
    shutdown: CancellationToken,
    mut run: F,
) -> Result<(), LeaderError>
where
    F: FnMut(Term) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let api = Api::<Lease>::namespaced(client, &election.namespace);
    tracing::info!(
        identity = %election.identity,
        lease = %format!("{}/{}", election.namespace, election.lease_name),
        duration = ?election.lease_duration,
        "leader election: waiting for the lease"
    );
    loop {
        let _ = readiness.send(Readiness::Ready);
        let acquired = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            acquired = acquire(&api, &election) => acquired,
        };
        tracing::info!(identity = %election.identity, "leader election: acquired the lease, starting the controller");
        match lead(&api, &election, acquired, &readiness, &shutdown, &mut run).await {
            TermEnd::Shutdown => return Ok(()),
            TermEnd::ControllerExited => return Err(LeaderError::ControllerExited),
            TermEnd::SteppedDown => {
                tracing::warn!(identity = %election.identity, "leader election: no longer leading; waiting as a standby");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn election(duration: Duration) -> LeaderElection {
        LeaderElection {
            lease_name: "invite-operator".into(),
            namespace: "default".into(),
            identity: "me".into(),
            lease_duration: duration,
        }
    }

    #[test]
    fn timings_leave_a_margin_before_the_lease_can_be_taken() {
        let e = election(Duration::from_secs(15));
        assert_eq!(e.renew_interval(), Duration::from_millis(2500));
        assert_eq!(e.renew_deadline(), Duration::from_secs(10));
        assert_eq!(e.stop_deadline(), Duration::from_millis(12500));
        assert!(e.renew_interval() < e.renew_deadline());
        assert!(e.renew_deadline() < e.stop_deadline());
        assert!(e.stop_deadline() < e.lease_duration);
        assert_eq!(e.lease_duration_seconds(), 15);
        assert_eq!(
            election(Duration::from_millis(1500)).lease_duration_seconds(),
            2
        );
    }

    #[test]
    fn validate_rejects_short_durations_and_empty_names() {
        assert!(election(Duration::from_secs(1)).validate().is_ok());
        assert!(election(Duration::from_millis(999)).validate().is_err());
        let mut e = election(Duration::from_secs(15));
        e.identity.clear();
        assert!(e.validate().is_err());
    }

    #[test]
    fn default_identities_are_unique() {
        assert_ne!(default_identity(), default_identity());
    }

    #[tokio::test]
    async fn leadership_is_valid_until_its_deadline() {
        let l = Leadership::default();
        assert!(!l.is_valid());
        l.set(Some(Instant::now() + Duration::from_secs(5)));
        assert!(l.is_valid());
        l.set(Some(Instant::now() - Duration::from_millis(1)));
        assert!(!l.is_valid());
        let expiring = Leadership::expiring_at(Instant::now() + Duration::from_millis(50));
        assert!(expiring.is_valid());
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(!expiring.is_valid());
        assert!(Leadership::unconditional().is_valid());
    }
}
