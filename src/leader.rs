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

use std::{pin::Pin, sync::Arc, time::Duration};

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::MicroTime,
};
use kube::{
    Api, Client, ResourceExt,
    api::{ObjectMeta, PostParams},
};
use tokio::{
    sync::watch,
    task::JoinHandle,
    time::{Instant, sleep, sleep_until, timeout},
};

use tokio_util::sync::CancellationToken;

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
    pub fn validate(&self) -> Result<(), String> {
        if self.lease_duration < Duration::from_secs(1) {
            return Err(format!(
                "the lease duration must be at least 1s, not {}",
                humantime::format_duration(self.lease_duration)
            ));
        }
        if self.identity.is_empty() {
            return Err("the leader-election identity must not be empty".into());
        }
        if self.lease_name.is_empty() || self.namespace.is_empty() {
            return Err("the lease name and namespace must not be empty".into());
        }
        Ok(())
    }
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
    let shutdown = shutdown.cancelled_owned();
    let mut shutdown = std::pin::pin!(shutdown);
    tracing::info!(
        identity = %election.identity,
        lease = %format!("{}/{}", election.namespace, election.lease_name),
        duration = ?election.lease_duration,
        "leader election: waiting for the lease"
    );
    loop {
        let _ = readiness.send(Readiness::Ready);
        let acquired = tokio::select! {
            _ = &mut shutdown => return Ok(()),
            acquired = acquire(&api, &election) => acquired,
        };
        tracing::info!(identity = %election.identity, "leader election: acquired the lease, starting the controller");
        match lead(
            &api,
            &election,
            acquired,
            &readiness,
            &mut shutdown,
            &mut run,
        )
        .await
        {
            TermEnd::Shutdown => return Ok(()),
            TermEnd::ControllerExited => return Err(LeaderError::ControllerExited),
            TermEnd::SteppedDown => {
                tracing::warn!(identity = %election.identity, "leader election: no longer leading; waiting as a standby");
            }
        }
    }
}

/// A spawned task that is aborted when the handle is dropped (so dropping the election future
/// never leaves a controller running).
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl<T> AbortOnDrop<T> {
    /// Aborts the task and waits until it is gone.
    async fn abort_and_wait(&mut self) {
        self.0.abort();
        let _ = (&mut self.0).await;
    }
}

/// The Lease as held after a successful write, and when that write was sent.
struct Acquired {
    lease: Lease,
    sent_at: Instant,
}

/// What the renewing task reports.
#[derive(Clone, Debug)]
enum Renewal {
    /// Renewed by a write sent at this time.
    Renewed(Instant),
    /// The Lease is held by someone else (or nobody, or it is gone).
    Lost(Option<String>),
}

enum TermEnd {
    Shutdown,
    SteppedDown,
    ControllerExited,
}

fn holder_of(lease: &Lease) -> Option<String> {
    lease
        .spec
        .as_ref()
        .and_then(|s| s.holder_identity.clone())
        .filter(|h| !h.is_empty())
}

fn now_micro() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

fn is_status(error: &kube::Error, code: u16) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == code)
}

/// An error of one Lease request (an API error or a timeout).
#[derive(Debug)]
enum LeaseCallError {
    Kube(kube::Error),
    Timeout,
}

impl std::fmt::Display for LeaseCallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LeaseCallError::Kube(e) => write!(f, "{e}"),
            LeaseCallError::Timeout => write!(f, "request timed out"),
        }
    }
}

impl LeaseCallError {
    fn is_status(&self, code: u16) -> bool {
        matches!(self, LeaseCallError::Kube(e) if is_status(e, code))
    }
}

async fn call<T>(
    election: &LeaderElection,
    request: impl Future<Output = Result<T, kube::Error>>,
) -> Result<T, LeaseCallError> {
    match timeout(election.request_timeout(), request).await {
        Ok(result) => result.map_err(LeaseCallError::Kube),
        Err(_) => Err(LeaseCallError::Timeout),
    }
}

/// Waits as a standby until the Lease is ours.
async fn acquire(api: &Api<Lease>, election: &LeaderElection) -> Acquired {
    let mut observed: Option<(String, Instant)> = None;
    let mut last_holder: Option<String> = None;
    loop {
        match try_acquire(api, election, &mut observed).await {
            Ok(Ok(acquired)) => return acquired,
            Ok(Err(holder)) => {
                if holder != last_holder {
                    tracing::info!(identity = %election.identity, holder = holder.as_deref().unwrap_or("<none>"), "leader election: standby");
                    last_holder = holder;
                }
            }
            Err(error) => {
                tracing::warn!(identity = %election.identity, %error, "leader election: cannot read or take the lease");
            }
        }
        let interval = election.renew_interval();
        let jitter = rand::random_range(0..=(interval.as_millis() as u64 / 10).max(1));
        sleep(interval + Duration::from_millis(jitter)).await;
    }
}

/// One standby step: `Ok(Ok(_))` when the Lease was taken, `Ok(Err(holder))` when it is held by
/// someone else (or was taken by someone else meanwhile).
async fn try_acquire(
    api: &Api<Lease>,
    election: &LeaderElection,
    observed: &mut Option<(String, Instant)>,
) -> Result<Result<Acquired, Option<String>>, LeaseCallError> {
    let pp = PostParams::default();
    let Some(current) = call(election, api.get_opt(&election.lease_name)).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(election.lease_name.clone()),
                namespace: Some(election.namespace.clone()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(election.identity.clone()),
                acquire_time: Some(now_micro()),
                renew_time: Some(now_micro()),
                lease_duration_seconds: Some(election.lease_duration_seconds()),
                lease_transitions: Some(0),
                ..Default::default()
            }),
        };
        let sent_at = Instant::now();
        return match call(election, api.create(&pp, &lease)).await {
            Ok(lease) => Ok(Ok(Acquired { lease, sent_at })),
            Err(e) if e.is_status(409) => Ok(Err(None)),
            Err(e) => Err(e),
        };
    };
    let holder = holder_of(&current);
    let version = current.resource_version().unwrap_or_default();
    let spec = current.spec.clone().unwrap_or_default();
    match &holder {
        None => {}
        Some(h) if h == &election.identity => {}
        Some(_) => {
            let theirs =
                Duration::from_secs(spec.lease_duration_seconds.unwrap_or(0).max(0) as u64);
            let wait = theirs.max(election.lease_duration);
            match observed {
                Some((seen, since)) if *seen == version => {
                    if since.elapsed() < wait {
                        return Ok(Err(holder));
                    }
                }
                _ => {
                    *observed = Some((version, Instant::now()));
                    return Ok(Err(holder));
                }
            }
            tracing::info!(identity = %election.identity, previous = holder.as_deref().unwrap_or_default(), "leader election: the lease expired, taking it over");
        }
    }
    let transitions = spec.lease_transitions.unwrap_or(0);
    let mut lease = current;
    lease.metadata.managed_fields = None;
    lease.spec = Some(LeaseSpec {
        holder_identity: Some(election.identity.clone()),
        acquire_time: Some(now_micro()),
        renew_time: Some(now_micro()),
        lease_duration_seconds: Some(election.lease_duration_seconds()),
        lease_transitions: Some(if holder.as_deref() == Some(election.identity.as_str()) {
            transitions
        } else {
            transitions.saturating_add(1)
        }),
        ..spec
    });
    let sent_at = Instant::now();
    match call(election, api.replace(&election.lease_name, &pp, &lease)).await {
        Ok(lease) => Ok(Ok(Acquired { lease, sent_at })),
        // Someone wrote the Lease meanwhile: start observing again.
        Err(e) if e.is_status(409) || e.is_status(404) => {
            *observed = None;
            Ok(Err(holder))
        }
        Err(e) => Err(e),
    }
}

/// One leadership term: runs the controller until it must stop.
async fn lead<F, Fut>(
    api: &Api<Lease>,
    election: &LeaderElection,
    acquired: Acquired,
    readiness: &watch::Sender<Readiness>,
    shutdown: &mut Pin<&mut impl Future<Output = ()>>,
    run: &mut F,
) -> TermEnd
where
    F: FnMut(Term) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let leadership = Leadership::default();
    leadership.set(Some(acquired.sent_at + election.renew_deadline()));
    let stop = CancellationToken::new();
    let (term_readiness, mut term_readiness_rx) = watch::channel(Readiness::default());
    let _ = readiness.send(Readiness::default());
    let mut controller = AbortOnDrop(tokio::spawn(run(Term {
        readiness: term_readiness,
        stop: stop.clone(),
        leadership: leadership.clone(),
    })));
    let mut last_renewed = acquired.sent_at;
    let (renew_tx, mut renew_rx) = watch::channel(Renewal::Renewed(last_renewed));
    renew_rx.mark_unchanged();
    let mut renewer = AbortOnDrop(tokio::spawn(renew_loop(
        api.clone(),
        election.clone(),
        acquired,
        renew_tx,
    )));
    let mut shutting_down: Option<Instant> = None;
    loop {
        let shutdown_abort_at = shutting_down.map(|at| at + election.lease_duration);
        tokio::select! {
            biased;
            changed = renew_rx.changed() => {
                let renewal = if changed.is_ok() {
                    renew_rx.borrow_and_update().clone()
                } else {
                    Renewal::Lost(None)
                };
                match renewal {
                    Renewal::Renewed(at) => {
                        last_renewed = at;
                        leadership.set(Some(at + election.renew_deadline()));
                    }
                    Renewal::Lost(holder) => {
                        leadership.set(None);
                        controller.abort_and_wait().await;
                        tracing::error!(
                            identity = %election.identity,
                            holder = holder.as_deref().unwrap_or("<none>"),
                            "leader election: the lease was taken by someone else; controller aborted"
                        );
                        return if shutting_down.is_some() { TermEnd::Shutdown } else { TermEnd::SteppedDown };
                    }
                }
            }
            _ = sleep_until(last_renewed + election.renew_deadline()) => {
                leadership.set(None);
                renewer.abort_and_wait().await;
                tracing::error!(
                    identity = %election.identity,
                    deadline = ?election.renew_deadline(),
                    "leader election: could not renew the lease in time; stopping the controller"
                );
                stop.cancel();
                if timeout_at_or_abort(&mut controller, last_renewed + election.stop_deadline()).await {
                    tracing::warn!(identity = %election.identity, "leader election: the controller did not stop in time and was aborted");
                }
                // The controller is gone: releasing (if the lease is still ours) is safe and
                // lets a standby take over sooner.
                release(api, election).await;
                return if shutting_down.is_some() { TermEnd::Shutdown } else { TermEnd::SteppedDown };
            }
            result = &mut controller.0 => {
                leadership.set(None);
                renewer.abort_and_wait().await;
                release(api, election).await;
                if shutting_down.is_some() {
                    tracing::info!(identity = %election.identity, "leader election: controller stopped, lease released");
                    return TermEnd::Shutdown;
                }
                match result {
                    Err(e) if e.is_panic() => tracing::error!(identity = %election.identity, "leader election: the controller panicked"),
                    _ => tracing::error!(identity = %election.identity, "leader election: the controller stopped unexpectedly"),
                }
                return TermEnd::ControllerExited;
            }
            _ = async {
                match shutdown_abort_at {
                    Some(at) => sleep_until(at).await,
                    None => std::future::pending().await,
                }
            } => {
                tracing::warn!(identity = %election.identity, "leader election: the controller did not stop within the lease duration; aborting it");
                leadership.set(None);
                controller.abort_and_wait().await;
                renewer.abort_and_wait().await;
                release(api, election).await;
                return TermEnd::Shutdown;
            }
            _ = shutdown.as_mut(), if shutting_down.is_none() => {
                // Keep renewing while the controller finishes its reconciles.
                shutting_down = Some(Instant::now());
                stop.cancel();
            }
            Ok(()) = term_readiness_rx.changed() => {
                let state = *term_readiness_rx.borrow_and_update();
                let _ = readiness.send(state);
            }
        }
    }
}

/// Waits for the controller until `deadline`, then aborts it; `true` when it was aborted.
async fn timeout_at_or_abort(controller: &mut AbortOnDrop<()>, deadline: Instant) -> bool {
    if tokio::time::timeout_at(deadline, &mut controller.0)
        .await
        .is_ok()
    {
        return false;
    }
    controller.abort_and_wait().await;
    true
}

/// Renews the Lease every `renew_interval` and reports each success (with the time it was
/// sent) or the loss of the Lease (then returns).
async fn renew_loop(
    api: Api<Lease>,
    election: LeaderElection,
    acquired: Acquired,
    report: watch::Sender<Renewal>,
) {
    let mut lease = acquired.lease;
    let mut attempt = acquired.sent_at;
    loop {
        sleep_until(attempt + election.renew_interval()).await;
        attempt = Instant::now();
        match renew_once(&api, &election, &mut lease).await {
            Ok(()) => {
                if report.send(Renewal::Renewed(attempt)).is_err() {
                    return;
                }
            }
            Err(RenewError::Lost(holder)) => {
                let _ = report.send(Renewal::Lost(holder));
                return;
            }
            Err(RenewError::Failed(error)) => {
                tracing::warn!(identity = %election.identity, %error, "leader election: cannot renew the lease");
            }
        }
    }
}

enum RenewError {
    Lost(Option<String>),
    Failed(LeaseCallError),
}

/// One renewal: a replace at the last known resourceVersion; after a conflict the Lease is read
/// again and, if it is still ours, the replace is retried once.
async fn renew_once(
    api: &Api<Lease>,
    election: &LeaderElection,
    lease: &mut Lease,
) -> Result<(), RenewError> {
    for _ in 0..2 {
        let mut next = lease.clone();
        next.metadata.managed_fields = None;
        let spec = next.spec.get_or_insert_with(Default::default);
        spec.holder_identity = Some(election.identity.clone());
        spec.renew_time = Some(now_micro());
        spec.lease_duration_seconds = Some(election.lease_duration_seconds());
        match call(
            election,
            api.replace(&election.lease_name, &PostParams::default(), &next),
        )
        .await
        {
            Ok(updated) => {
                *lease = updated;
                return Ok(());
            }
            Err(e) if e.is_status(404) => return Err(RenewError::Lost(None)),
            Err(e) if e.is_status(409) => {
                match call(election, api.get_opt(&election.lease_name)).await {
                    Ok(Some(current))
                        if holder_of(&current).as_deref() == Some(election.identity.as_str()) =>
                    {
                        *lease = current;
                    }
                    Ok(Some(current)) => return Err(RenewError::Lost(holder_of(&current))),
                    Ok(None) => return Err(RenewError::Lost(None)),
                    Err(e) => return Err(RenewError::Failed(e)),
                }
            }
            Err(e) => return Err(RenewError::Failed(e)),
        }
    }
    Err(RenewError::Failed(LeaseCallError::Timeout))
}

/// Clears the holder if the Lease is still ours (best effort, after the controller stopped).
async fn release(api: &Api<Lease>, election: &LeaderElection) {
    for _ in 0..3 {
        let current = match call(election, api.get_opt(&election.lease_name)).await {
            Ok(Some(current)) => current,
            Ok(None) => return,
            Err(error) => {
                tracing::warn!(identity = %election.identity, %error, "leader election: cannot release the lease");
                return;
            }
        };
        if holder_of(&current).as_deref() != Some(election.identity.as_str()) {
            return;
        }
        let mut released = current;
        released.metadata.managed_fields = None;
        if let Some(spec) = released.spec.as_mut() {
            spec.holder_identity = None;
            spec.acquire_time = None;
            spec.renew_time = None;
        }
        match call(
            election,
            api.replace(&election.lease_name, &PostParams::default(), &released),
        )
        .await
        {
            Ok(_) => {
                tracing::info!(identity = %election.identity, "leader election: lease released");
                return;
            }
            Err(e) if e.is_status(409) => continue,
            Err(error) => {
                tracing::warn!(identity = %election.identity, %error, "leader election: cannot release the lease");
                return;
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
    }
}
