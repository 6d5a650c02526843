//! The Lease calls of the election: every write is a `create` or a `replace` carrying the
//! resourceVersion the writer read, so of two concurrent writers exactly one wins.

use std::time::Duration;

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::MicroTime,
};
use kube::{
    Api, ResourceExt,
    api::{ObjectMeta, PostParams},
};
use tokio::{
    sync::watch,
    time::{Instant, sleep, sleep_until, timeout},
};

use super::LeaderElection;

/// The Lease API of the election's namespace.
pub type LeaseApi = Api<Lease>;

/// The Lease as held after a successful write, and when that write was sent.
pub struct Acquired {
    /// The Lease as written.
    pub lease: Lease,
    /// When the write was sent (the base of every deadline).
    pub sent_at: Instant,
}

/// What the renewing task reports.
#[derive(Clone, Debug)]
pub enum Renewal {
    /// Renewed by a write sent at this time.
    Renewed(Instant),
    /// The Lease is held by someone else (or nobody, or it is gone).
    Lost(Option<String>),
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
pub async fn acquire(api: &Api<Lease>, election: &LeaderElection) -> Acquired {
    let mut observed: Option<(String, Instant)> = None;
    let mut last_holder: Option<String> = None;
    loop {
        match try_acquire(api, election, &mut observed).await {
            Ok(Attempt::Acquired(acquired)) => return *acquired,
            Ok(Attempt::HeldBy(holder)) => {
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

/// What one standby step found.
enum Attempt {
    /// The Lease is ours.
    Acquired(Box<Acquired>),
    /// It is held by someone else (or was taken by someone else meanwhile).
    HeldBy(Option<String>),
}

/// One standby step: takes the Lease if it is free, ours, or expired.
async fn try_acquire(
    api: &Api<Lease>,
    election: &LeaderElection,
    observed: &mut Option<(String, Instant)>,
) -> Result<Attempt, LeaseCallError> {
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
            Ok(lease) => Ok(Attempt::Acquired(Box::new(Acquired { lease, sent_at }))),
            Err(e) if e.is_status(409) => Ok(Attempt::HeldBy(None)),
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
                        return Ok(Attempt::HeldBy(holder));
                    }
                }
                _ => {
                    *observed = Some((version, Instant::now()));
                    return Ok(Attempt::HeldBy(holder));
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
        Ok(lease) => Ok(Attempt::Acquired(Box::new(Acquired { lease, sent_at }))),
        // Someone wrote the Lease meanwhile: start observing again.
        Err(e) if e.is_status(409) || e.is_status(404) => {
            *observed = None;
            Ok(Attempt::HeldBy(holder))
        }
        Err(e) => Err(e),
    }
}

/// Renews the Lease every `renew_interval` and reports each success (with the time it was
/// sent) or the loss of the Lease (then returns).
pub async fn renew_loop(
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
pub async fn release(api: &Api<Lease>, election: &LeaderElection) {
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
