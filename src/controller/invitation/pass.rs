//! One pass of the controller over one resource: the shared pass driver
//! ([`reconcile::pass`]) run against the shard's caches and the coalescing clients, with the
//! addresses held while they are worked on, and its outcome published (holder index, memory,
//! events, the endpoint's recheck, the next look).

use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use kube::{
    ResourceExt,
    runtime::{controller::Action, events::EventType},
};

use super::{LOOK_AGAIN, cleanup};
use crate::{
    api::{UserInvitation, UserInvitationStatus},
    controller::{
        context::{EndpointKey, Shard},
        endpoints::Endpoints,
        error::ReconcileError,
        kubernetes::writes::KubeStatusWriter,
        state::holders::HolderLookup,
    },
    invite::{ApiError, ErrorCategory, intent::BatchIntent},
    reconcile::{
        self, SyncReport,
        pass::{self, Outcome, Stopped, Synced},
        plan::{self, PlanContext, ReadyReason},
        resolve::{Resolved, Rules},
    },
};

/// The controller's side of a pass.
struct ControllerDriver<'a> {
    shard: &'a Shard,
    endpoints: Endpoints<'a>,
    invitation: &'a UserInvitation,
    key: &'a str,
    /// Whether invited users are checked this pass (decided once the endpoint resolved).
    checks_invited: AtomicBool,
}

impl<'a> pass::Driver for ControllerDriver<'a> {
    type Source = Endpoints<'a>;
    type Writer = KubeStatusWriter;
    type Error = ReconcileError;

    fn source(&self) -> &Endpoints<'a> {
        &self.endpoints
    }

    fn rules(&self) -> Rules<'_> {
        self.endpoints.rules()
    }

    fn serves(&self, invitation: &UserInvitation) -> bool {
        self.endpoints.serves(invitation)
    }

    fn check_invited(&self) -> bool {
        let ctx = &self.shard.ctx;
        let due = ctx.memory.check_due(self.key, ctx.settings.resync_interval);
        self.checks_invited.store(due, Ordering::Relaxed);
        due
    }

    fn max_clock_skew(&self) -> Duration {
        self.shard.ctx.settings.max_clock_skew
    }

    fn journaled(&self, invitation: &UserInvitation) -> Vec<(String, BatchIntent)> {
        let uid = invitation.metadata.uid.as_deref().unwrap_or_default();
        self.shard.ctx.journal.open_for(uid)
    }

    async fn sync(
        &self,
        resolved: &Resolved,
        plan_ctx: &mut PlanContext<'_>,
        writer: &mut KubeStatusWriter,
    ) -> Result<SyncReport, ReconcileError> {
        let ctx = &self.shard.ctx;
        let claim = ctx
            .claims
            .claim(&resolved.identity, plan::addresses_to_claim(plan_ctx))
            .await;
        plan_ctx.others =
            ctx.holders
                .others(&resolved.identity, self.key, &plan_ctx.requested.addresses);
        let holders = HolderLookup {
            index: &ctx.holders,
            api: &resolved.identity,
            me: self.key,
        };
        let result = reconcile::sync(resolved.api.as_ref(), plan_ctx, &holders, writer).await;
        // What was written is what the index shows, also when a later write failed (an
        // `Inviting` intent holds its people until it settles).
        if let Some(written) = writer.last_written.take() {
            ctx.holders.update(self.key, Some(&written));
        }
        if result.as_ref().is_ok_and(|report| report.finished) {
            // The status holds the outcome (or the `Inviting` intent) of every address the
            // journal held for this resource.
            let uid = self.invitation.metadata.uid.as_deref().unwrap_or_default();
            ctx.journal.recorded(uid).await;
        }
        drop(claim);
        Ok(result?)
    }
}

/// One pass: cleanup of a deleted resource, or the pass proper with the finalizer held as
/// deletionPolicy asks.
pub(super) async fn run(
    invitation: &UserInvitation,
    shard: &Shard,
    key: &str,
) -> Result<Action, ReconcileError> {
    let ctx = &shard.ctx;
    let cached = invitation.resource_version().unwrap_or_default();
    if ctx.memory.is_outdated(key, &cached) {
        // This copy predates a write of our own that the cache has not delivered yet.
        return Ok(Action::requeue(LOOK_AGAIN));
    }
    if invitation.metadata.deletion_timestamp.is_some() {
        return cleanup::on_deletion(shard, invitation, invitation.is_paused()).await;
    }
    let version = cleanup::hold_finalizer_if_needed(ctx, invitation).await?;
    // Every version this pass read or wrote before its last write is outdated once it wrote:
    // the copy it started from too, so that a retry reading that copy from a cache that has
    // not caught up waits instead of planning from a status without this pass's intents.
    let mut ours = vec![cached.clone()];
    if version != cached {
        ours.push(version.clone());
    }
    let mut writer = KubeStatusWriter::new(ctx.client.clone(), invitation, version)
        .counted_in(ctx.events.status_writes());
    let driver = ControllerDriver {
        shard,
        endpoints: Endpoints::of(shard),
        invitation,
        key,
        checks_invited: AtomicBool::new(false),
    };
    let result = match pass::run(&driver, invitation, &mut writer).await {
        Ok(Outcome::NotServed) => Ok(Action::await_change()),
        Ok(Outcome::Stopped(stopped)) => driver.stopped(*stopped).await,
        Ok(Outcome::Synced(synced)) => driver.synced(*synced).await,
        Err(error) => Err(error),
    };
    if result.is_err() && driver.checks_invited.load(Ordering::Relaxed) {
        ctx.memory.check_missed(key);
    }
    if ours.len() > 1 || !writer.produced.is_empty() {
        ours.extend(writer.produced.iter().cloned());
        ctx.memory.wrote(key, &ours);
    }
    result
}

impl ControllerDriver<'_> {
    /// A pass that could not proceed: counts the users of a status that changed and tells
    /// with an event when the reason is new. A paused resource waits for a change; anything
    /// else is retried slowly.
    async fn stopped(&self, stopped: Stopped) -> Result<Action, ReconcileError> {
        let ctx = &self.shard.ctx;
        let Stopped {
            blocked,
            retry_in,
            written,
            was,
        } = stopped;
        if let Some(status) = written {
            self.count_users(&status);
            if was.as_deref() != Some(blocked.reason.as_str()) {
                let type_ = match blocked.reason {
                    ReadyReason::Paused => EventType::Normal,
                    _ => EventType::Warning,
                };
                let (reason, message) = (blocked.reason.as_str(), blocked.message.clone());
                ctx.events
                    .publish(self.invitation, type_, reason, "Reconcile", message)
                    .await;
            }
        }
        match (blocked.reason, retry_in) {
            (ReadyReason::Paused, _) => Ok(Action::await_change()),
            (_, Some(wait)) => Ok(Action::requeue(wait)),
            _ => Err(ReconcileError::Blocked(blocked)),
        }
    }

    /// A pass that ran: its users counted, its events, and when to look again.
    async fn synced(&self, synced: Synced) -> Result<Action, ReconcileError> {
        let ctx = &self.shard.ctx;
        let invitation = self.invitation;
        let Synced {
            report,
            resolved,
            started_over,
            ..
        } = synced;
        self.count_users(&report.status);
        ctx.events
            .pass(invitation, resolved.api.flavor(), &report)
            .await;
        if let Some((dropped, entries)) = started_over {
            let message = format!(
                "{entries} users were invited or adopted through {dropped}; the resource now uses {} ({}): ownership there was dropped, nothing was removed, revoked or enforced because of it, and the users are looked up anew",
                resolved.endpoint.binding(),
                resolved.identity
            );
            ctx.events
                .publish(
                    invitation,
                    EventType::Warning,
                    "EndpointChanged",
                    "Reconcile",
                    message,
                )
                .await;
        }
        if let Some(problem) = report.problem {
            return Err(self.problem(problem, &resolved));
        }
        Ok(match report.next_look {
            Some(wait) => Action::requeue(wait + Duration::from_millis(100)),
            None => {
                // The shard wakes it when due (`shard::wake_due_resyncs`).
                let at = std::time::Instant::now() + super::jittered(ctx.settings.resync_interval);
                ctx.memory.resync_at(self.key, at);
                Action::await_change()
            }
        })
    }

    /// Counts the users of a status the pass wrote.
    fn count_users(&self, status: &UserInvitationStatus) {
        let namespace = self.invitation.namespace().unwrap_or_default();
        self.shard
            .ctx
            .memory
            .count_users(self.key, &namespace, status);
    }

    /// A problem the pass met: a budget the endpoint's Ready condition reports now, a token
    /// read again next time.
    fn problem(&self, problem: ApiError, resolved: &Resolved) -> ReconcileError {
        let ctx = &self.shard.ctx;
        if matches!(problem, ApiError::LimitExceeded { .. }) {
            // The endpoint's Ready condition says which budget, now rather than at its next
            // check.
            let r = &self.invitation.spec.endpoint_ref;
            let _ = ctx.endpoint_rechecks.send(EndpointKey {
                kind: r.kind,
                namespace: self.invitation.metadata.namespace.clone(),
                name: r.name.clone(),
            });
        }
        if problem.category() == ErrorCategory::Configuration {
            // The API refused the token: read the Secret again next time (it may be rotated).
            ctx.clients.forget_secret(&resolved.location);
        }
        problem.into()
    }
}
