//! The UserInvitation reconciler: one pass resolves the endpoint, holds the addresses it works
//! on, runs the planner's phases against the (coalescing) client, and publishes the outcome
//! (status, holder index, events, metrics). A resource that cannot be worked on is blocked with
//! a condition, keeping every status entry it has. A resource whose endpoint this controller
//! does not serve (endpoint selectors: several operators in one cluster) is left alone before
//! anything else: another controller serves it, or nobody.

use std::{sync::Arc, time::Duration};

use kube::{
    ResourceExt,
    runtime::{controller::Action, events::EventType},
};

use super::{
    cleanup,
    context::Shard,
    kubernetes::{KubeStatusWriter, is_guard_failure},
    resolution::{self, Resolution, Resolved},
};
use crate::{
    api::{PAUSED_ANNOTATION, UserInvitation},
    invite::{ApiError, ErrorCategory, transport::backoff_delay},
    reconcile::{
        self, StatusWriter, WriteError,
        plan::{self, Blocked, EndpointFacts, PlanContext, ReadyReason, Requested},
    },
    telemetry::ReconcileLabels,
};

/// How soon a pass that met a newer version of its resource (a conflict, or a cache that has
/// not caught up with the controller's own write) runs again.
const LOOK_AGAIN: Duration = Duration::from_millis(200);

/// Errors of one reconcile.
#[derive(thiserror::Error, Debug)]
pub enum ReconcileError {
    /// A Kubernetes call failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// Writing the status failed.
    #[error(transparent)]
    Write(#[from] WriteError),
    /// The invite API failed (the status says so where it matters).
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The resource cannot be worked on until something changes.
    #[error("{}", .0.message)]
    Blocked(Blocked),
}

impl ReconcileError {
    /// What to do about it.
    pub fn category(&self) -> ErrorCategory {
        match self {
            ReconcileError::Api(e) => e.category(),
            ReconcileError::Kube(_) | ReconcileError::Write(_) => ErrorCategory::Transient,
            ReconcileError::Blocked(_) => ErrorCategory::Configuration,
        }
    }

    /// Whether a guarded write lost a race with another change of the resource (no failure:
    /// its new version is reconciled instead).
    pub fn is_conflict(&self) -> bool {
        match self {
            ReconcileError::Write(WriteError::Conflict) => true,
            ReconcileError::Kube(e) => is_guard_failure(e),
            _ => false,
        }
    }

    fn label(&self) -> &'static str {
        match self.category() {
            ErrorCategory::Transient => "transient",
            ErrorCategory::Configuration => "configuration",
            ErrorCategory::Permanent => "permanent",
        }
    }
}

/// The `namespace/name` of a resource: how the controller's memory and indexes name it.
pub fn resource_key(invitation: &UserInvitation) -> String {
    format!(
        "{}/{}",
        invitation.namespace().unwrap_or_default(),
        invitation.name_any()
    )
}

/// The endpoint a resource names, as the fair share counts it.
fn endpoint_of(invitation: &UserInvitation) -> String {
    let r = &invitation.spec.endpoint_ref;
    match r.kind {
        crate::api::EndpointKind::InvitationEndpoint => format!(
            "InvitationEndpoint/{}/{}",
            invitation.metadata.namespace.as_deref().unwrap_or_default(),
            r.name
        ),
        crate::api::EndpointKind::ClusterInvitationEndpoint => {
            format!("ClusterInvitationEndpoint/{}", r.name)
        }
    }
}

/// Reconciles one UserInvitation.
pub async fn reconcile(
    invitation: Arc<UserInvitation>,
    shard: Arc<Shard>,
) -> Result<Action, ReconcileError> {
    // Caches must be complete before deciding: an endpoint that merely was not listed yet
    // would be reported missing, and a holder not indexed yet would be missed.
    let _ = shard.caches_ready.clone().wait_for(|ready| *ready).await;
    let ctx = &shard.ctx;
    let key = resource_key(&invitation);
    if !resolution::serves(&shard, &invitation) {
        // Another controller's resource (endpoint selectors), or nobody's: no status, no
        // finalizer, no cleanup, no event, no metric. Its endpoint entering this controller's
        // selection (or a change of the resource) brings it back.
        tracing::trace!(resource = %key, "left alone: its endpoint is not served here");
        ctx.memory.forget(&key);
        return Ok(Action::await_change());
    }
    let namespace = invitation.metadata.namespace.as_deref().unwrap_or_default();
    let _slot = match ctx.fair_share.enter(namespace, &endpoint_of(&invitation)) {
        Ok(slot) => slot,
        Err(over) => {
            // The slot goes back to the controller for another namespace or endpoint.
            ctx.metrics
                .deferred
                .get_or_create(&crate::telemetry::DeferLabels {
                    share: over.label().to_string(),
                })
                .inc();
            return Ok(Action::requeue(Duration::from_millis(rand::random_range(
                100..=300,
            ))));
        }
    };
    let started = std::time::Instant::now();
    let span = tracing::info_span!(
        "reconcile",
        namespace = invitation.metadata.namespace.as_deref().unwrap_or_default(),
        name = %invitation.name_any(),
        endpoint = %reconcile::resolve::endpoint_display(&invitation),
    );
    let result = match tracing::Instrument::instrument(pass(&invitation, &shard, &key), span).await
    {
        // The resource changed since it was read: its new version is worked on instead.
        Err(error) if error.is_conflict() => {
            tracing::debug!(%error, "the resource changed meanwhile; looking again");
            Ok(Action::requeue(LOOK_AGAIN))
        }
        other => other,
    };
    ctx.metrics
        .reconcile_duration
        .observe(started.elapsed().as_secs_f64());
    let result_label = match &result {
        Ok(_) => "ok",
        Err(e) => e.label(),
    };
    ctx.metrics
        .reconciles
        .get_or_create(&ReconcileLabels {
            result: result_label.to_string(),
        })
        .inc();
    if result.is_ok() {
        ctx.memory.succeeded(&key);
    }
    result
}

async fn pass(
    invitation: &UserInvitation,
    shard: &Shard,
    key: &str,
) -> Result<Action, ReconcileError> {
    let ctx = &shard.ctx;
    let version = invitation.resource_version().unwrap_or_default();
    if ctx.memory.is_outdated(key, &version) {
        // This copy predates a write of our own that the cache has not delivered yet.
        return Ok(Action::requeue(LOOK_AGAIN));
    }
    let paused = invitation.is_paused();
    if invitation.metadata.deletion_timestamp.is_some() {
        return cleanup::on_deletion(shard, invitation, paused).await;
    }
    let version = cleanup::hold_finalizer_if_needed(ctx, invitation).await?;
    let mut writer = KubeStatusWriter::new(ctx.client.clone(), invitation, version);
    let result = work(shard, invitation, key, paused, &mut writer).await;
    ctx.memory.wrote(key, &writer.produced);
    result
}

async fn work(
    shard: &Shard,
    invitation: &UserInvitation,
    key: &str,
    paused: bool,
    writer: &mut KubeStatusWriter,
) -> Result<Action, ReconcileError> {
    let ctx = &shard.ctx;
    let requested = match plan::requested_addresses(&invitation.spec) {
        Ok(requested) => requested,
        Err(blocked) => {
            // Nothing usable is requested: every entry stays as it is until the spec is fixed.
            let previous = invitation.status.clone().unwrap_or_default();
            let kept = plan::unusable_spec_keeps(&previous);
            return block(shard, Stop::new(invitation, &kept, blocked), writer).await;
        }
    };
    if paused {
        let message =
            format!("paused by the {PAUSED_ANNOTATION} annotation; no API calls are made");
        let stop = Stop::new(
            invitation,
            &requested,
            Blocked::new(ReadyReason::Paused, message),
        );
        return block(shard, stop, writer).await;
    }
    let resolved = match resolution::resolve(shard, invitation, requested.addresses.len()).await? {
        Resolution::Ready(resolved) => resolved,
        Resolution::Blocked(blocked) => {
            return block(shard, Stop::new(invitation, &requested, blocked), writer).await;
        }
        Resolution::NotServed => return Ok(Action::await_change()),
    };
    let check_invited = ctx.memory.check_due(key, ctx.settings.resync_interval);
    let result = sync(
        shard,
        invitation,
        key,
        &requested,
        &resolved,
        check_invited,
        writer,
    )
    .await;
    if result.is_err() && check_invited {
        ctx.memory.check_missed(key);
    }
    result
}

/// The pass proper: holds the addresses it works on while it looks them up, invites, corrects
/// or removes them and writes the outcome (published to the holder index before the addresses
/// are released).
async fn sync(
    shard: &Shard,
    invitation: &UserInvitation,
    key: &str,
    requested: &Requested,
    resolved: &Resolved,
    check_invited: bool,
    writer: &mut KubeStatusWriter,
) -> Result<Action, ReconcileError> {
    let ctx = &shard.ctx;
    let written = invitation.status.clone().unwrap_or_default();
    let facts = EndpointFacts::of(
        &resolved.endpoint,
        resolved.api.as_ref(),
        resolved.identity.clone(),
        ctx.settings.max_clock_skew,
    );
    let binding = plan::bind_to_endpoint(&written, &facts.api, &facts.endpoint, plan::now());
    let Some(previous) = binding.status() else {
        return wait_for_previous_endpoint(shard, invitation, requested, &facts, &binding, writer)
            .await;
    };
    let generation = invitation.metadata.generation.unwrap_or(0);
    let mut plan_ctx = PlanContext::new(
        requested,
        &invitation.spec,
        &previous,
        generation,
        check_invited,
        facts,
    );
    let claim = ctx
        .claims
        .claim(&resolved.identity, plan::addresses_to_claim(&plan_ctx))
        .await;
    plan_ctx.others = ctx
        .holders
        .others(&resolved.identity, key, &requested.addresses);
    let holders = HolderLookup {
        index: &ctx.holders,
        api: &resolved.identity,
        me: key,
    };
    let result = reconcile::sync(resolved.api.as_ref(), &plan_ctx, &holders, writer).await;
    // What was written is what the index shows, also when a later write failed (an
    // `Inviting` intent holds its people until it settles).
    if let Some(written) = writer.last_written.take() {
        ctx.holders.update(key, Some(&written));
    }
    drop(claim);
    let report = result?;
    ctx.memory.count_users(
        key,
        &invitation.namespace().unwrap_or_default(),
        &report.status,
    );
    ctx.events
        .pass(invitation, resolved.api.flavor(), &report)
        .await;
    if let plan::Binding::StartOver {
        dropped, entries, ..
    } = &binding
    {
        let message = format!(
            "{entries} users were invited or adopted through {dropped}; the resource now uses {} ({}): ownership there was dropped, nothing was removed, revoked or enforced because of it, and the users are looked up anew",
            plan_ctx.endpoint, plan_ctx.api
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
        if matches!(problem, ApiError::LimitExceeded { .. }) {
            // The endpoint's Ready condition says which budget, now rather than at its next
            // check.
            let r = &invitation.spec.endpoint_ref;
            let _ = ctx.endpoint_rechecks.send(super::EndpointKey {
                kind: r.kind,
                namespace: invitation.metadata.namespace.clone(),
                name: r.name.clone(),
            });
        }
        if problem.category() == ErrorCategory::Configuration {
            // The API refused the token: read the Secret again next time (it may be rotated).
            ctx.clients.forget_token(&resolved.location);
        }
        return Err(problem.into());
    }
    Ok(match report.next_look {
        Some(wait) => Action::requeue(wait + Duration::from_millis(100)),
        None => Action::requeue(jittered(ctx.settings.resync_interval)),
    })
}

/// The holder index, asked for one resource on one API.
pub struct HolderLookup<'a> {
    /// The index.
    pub index: &'a super::holders::HolderIndex,
    /// The API.
    pub api: &'a crate::api::ApiIdentity,
    /// The resource asking (`namespace/name`).
    pub me: &'a str,
}

impl reconcile::Holders for HolderLookup<'_> {
    fn other_holder(&self, email: &str) -> Option<String> {
        self.index
            .others(self.api, self.me, &[email.to_string()])
            .remove(email)
            .map(|h| h.owner)
    }
}

/// The resource's endpoint changed while an invite request sent through the previous one
/// may still act: it keeps its entries (holding those people on the previous API) and starts
/// over on the new endpoint once the request has settled.
async fn wait_for_previous_endpoint(
    shard: &Shard,
    invitation: &UserInvitation,
    requested: &Requested,
    facts: &EndpointFacts<'_>,
    binding: &plan::Binding<'_>,
    writer: &mut KubeStatusWriter,
) -> Result<Action, ReconcileError> {
    let plan::Binding::Settling { until, previous } = binding else {
        unreachable!("only a settling binding has no status to plan from");
    };
    let message = format!(
        "the resource now uses {} ({}); an invite request sent through {previous} may still act until {until}, so the users are looked up on the new endpoint after that",
        facts.endpoint, facts.api
    );
    let wait = std::time::Duration::try_from(until.duration_since(plan::now())).unwrap_or_default();
    let mut stop = Stop::new(
        invitation,
        requested,
        Blocked::new(ReadyReason::Pending, message),
    );
    stop.retry_in = Some(wait + Duration::from_millis(100));
    block(shard, stop, writer).await
}

/// A pass that cannot proceed: the resource, its requested addresses and why.
pub struct Stop<'a> {
    /// The resource.
    pub invitation: &'a UserInvitation,
    /// Its requested addresses.
    pub requested: &'a Requested,
    /// Why it cannot proceed.
    pub blocked: Blocked,
    /// When to look again, when it is known (otherwise: paused waits for a change, anything
    /// else backs off).
    pub retry_in: Option<Duration>,
}

impl<'a> Stop<'a> {
    /// A stop of `invitation` for `blocked`.
    pub fn new(invitation: &'a UserInvitation, requested: &'a Requested, blocked: Blocked) -> Self {
        Stop {
            invitation,
            requested,
            blocked,
            retry_in: None,
        }
    }
}

/// Shows why the resource cannot be worked on, keeping every status entry it has, and tells
/// with an event when the reason is new. A paused resource waits for a change; anything else
/// is retried slowly.
async fn block(
    shard: &Shard,
    stop: Stop<'_>,
    writer: &mut KubeStatusWriter,
) -> Result<Action, ReconcileError> {
    let ctx = &shard.ctx;
    let invitation = stop.invitation;
    let previous = invitation.status.clone().unwrap_or_default();
    let status = plan::blocked_status(
        stop.requested,
        &invitation.spec,
        &previous,
        invitation.metadata.generation.unwrap_or(0),
        plan::now(),
        &stop.blocked,
    );
    if status != previous {
        writer.write(&status).await?;
        ctx.memory.count_users(
            &resource_key(invitation),
            &invitation.namespace().unwrap_or_default(),
            &status,
        );
        let was = previous
            .conditions
            .iter()
            .find(|c| c.type_ == plan::READY)
            .map(|c| c.reason.as_str());
        if was != Some(stop.blocked.reason.as_str()) {
            let type_ = match stop.blocked.reason {
                ReadyReason::Paused => EventType::Normal,
                _ => EventType::Warning,
            };
            let reason = stop.blocked.reason.as_str();
            ctx.events
                .publish(
                    invitation,
                    type_,
                    reason,
                    "Reconcile",
                    stop.blocked.message.clone(),
                )
                .await;
        }
    }
    match (stop.blocked.reason, stop.retry_in) {
        (ReadyReason::Paused, _) => Ok(Action::await_change()),
        (_, Some(wait)) => Ok(Action::requeue(wait)),
        _ => Err(ReconcileError::Blocked(stop.blocked)),
    }
}

fn jittered(interval: Duration) -> Duration {
    let spread = interval.as_millis() as u64 / 10;
    interval + Duration::from_millis(rand::random_range(0..=spread.max(1)))
}

/// How long to wait after a failed pass: exponential backoff per failure in a row, slower
/// for problems a person must fix, never before the API's `Retry-After`.
pub fn error_policy(
    invitation: Arc<UserInvitation>,
    error: &ReconcileError,
    shard: Arc<Shard>,
) -> Action {
    let ctx = &shard.ctx;
    let failures = ctx.memory.failed(&resource_key(&invitation));
    let base = match error.category() {
        ErrorCategory::Transient => ctx.settings.retry_base_delay,
        // Configuration problems are re-checked slowly; endpoint changes trigger a pass at once.
        ErrorCategory::Configuration | ErrorCategory::Permanent => {
            ctx.settings.retry_base_delay * 8
        }
    };
    let mut delay = backoff_delay(base, failures).min(ctx.settings.retry_max_delay);
    if let ReconcileError::Api(api) = error
        && let Some(after) = api.retry_after()
    {
        delay = delay.max(after.min(ctx.settings.retry_max_delay));
    }
    tracing::info!(
        namespace = invitation.metadata.namespace.as_deref().unwrap_or_default(),
        name = %invitation.name_any(),
        %error,
        retry_in = ?delay,
        "reconcile failed"
    );
    Action::requeue(delay)
}
