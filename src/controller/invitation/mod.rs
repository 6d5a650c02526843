//! The UserInvitation reconciler: one pass resolves the endpoint, holds the addresses it works
//! on, runs the planner's phases against the (coalescing) client, and publishes the outcome
//! (status, holder index, events, metrics). A resource that cannot be worked on is blocked with
//! a condition, keeping every status entry it has. A resource whose endpoint this controller
//! does not serve (endpoint selectors: several operators in one cluster) is left alone before
//! anything else: another controller serves it, or nobody.

pub mod cleanup;
mod pass;

use std::{sync::Arc, time::Duration};

use kube::{ResourceExt, runtime::controller::Action};
use tokio_util::task::AbortOnDropHandle;

use super::{
    context::{Shard, Wake},
    endpoints::Endpoints,
    error::{ReconcileError, resource_key},
};
use crate::{
    api::UserInvitation,
    invite::{ErrorCategory, transport::backoff_delay},
    reconcile::{self, plan::ReadyReason},
    telemetry::ReconcileLabels,
};

/// How soon a pass that met a newer version of its resource (a conflict, or a cache that has
/// not caught up with the controller's own write) runs again.
const LOOK_AGAIN: Duration = Duration::from_millis(200);

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

/// Reconciles one UserInvitation: admitted to its fair share, its pass runs as a task of
/// its own.
///
/// kube-runtime polls every reconcile inside the controller's own task, beside the watch and
/// the scheduler: all passes of a shard would share one thread while the other cores idle.
/// Spawned, passes run on every worker thread; the controller's task only admits them and
/// waits. Dropping the reconcile (shutdown) aborts its pass, as dropping the pass itself did.
pub async fn reconcile(
    invitation: Arc<UserInvitation>,
    shard: Arc<Shard>,
) -> Result<Action, ReconcileError> {
    // Caches must be complete before deciding: an endpoint that merely was not listed yet
    // would be reported missing, and a holder not indexed yet would be missed.
    let _ = shard.caches_ready.clone().wait_for(|ready| *ready).await;
    let ctx = &shard.ctx;
    if !Endpoints::of(&shard).serves(&invitation) {
        // Another controller's resource (endpoint selectors), or nobody's: no status, no
        // finalizer, no cleanup, no event, no metric. Its endpoint entering this controller's
        // selection (or a change of the resource) brings it back.
        let key = resource_key(&invitation);
        tracing::trace!(resource = %key, "left alone: its endpoint is not served here");
        ctx.memory.forget(&key);
        return Ok(Action::await_change());
    }
    let namespace = invitation.metadata.namespace.as_deref().unwrap_or_default();
    let resource = Wake::new(namespace, &invitation.name_any());
    let slot =
        match ctx
            .fair_share
            .enter(namespace, &endpoint_of(&invitation), resource, &shard.wake)
        {
            Ok(slot) => slot,
            Err(over) => {
                // The slot goes back to the controller for another namespace or endpoint; the
                // share wakes this resource once one of its slots is free (no retry here: the
                // share's own safety net covers a wake that found nothing to run).
                ctx.metrics
                    .deferred
                    .get_or_create(&crate::telemetry::DeferLabels {
                        share: over.label().to_string(),
                    })
                    .inc();
                return Ok(Action::await_change());
            }
        };
    let pass = AbortOnDropHandle::new(tokio::spawn(async move {
        let result = run_pass(&invitation, &shard).await;
        drop(slot);
        result
    }));
    match pass.await {
        Ok(result) => result,
        Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
        // Cancelled: only when the runtime shuts down.
        Err(_) => Ok(Action::requeue(LOOK_AGAIN)),
    }
}

/// One admitted pass, with its span, metrics and the memory of its outcome.
async fn run_pass(
    invitation: &Arc<UserInvitation>,
    shard: &Arc<Shard>,
) -> Result<Action, ReconcileError> {
    let ctx = &shard.ctx;
    let key = resource_key(invitation);
    ctx.memory.resync_unscheduled(&key);
    let started = std::time::Instant::now();
    let span = tracing::info_span!(
        "reconcile",
        namespace = invitation.metadata.namespace.as_deref().unwrap_or_default(),
        name = %invitation.name_any(),
        endpoint = %reconcile::resolve::endpoint_display(invitation),
    );
    let result =
        match tracing::Instrument::instrument(pass::run(invitation, shard, &key), span).await {
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
    let waits_for_its_endpoint = matches!(error, ReconcileError::Blocked(blocked)
        if blocked.reason == ReadyReason::EndpointNotFound);
    tracing::info!(
        namespace = invitation.metadata.namespace.as_deref().unwrap_or_default(),
        name = %invitation.name_any(),
        %error,
        retry_in = ?(!waits_for_its_endpoint).then_some(delay),
        "reconcile failed"
    );
    if waits_for_its_endpoint {
        // The endpoint's creation starts a pass through the endpoint watch, so there is
        // nothing to retry: no backoff reading every waiting resource again and again (10,000
        // resources named a missing endpoint: 25,000 passes instead of 10,000), and no timer
        // either (10,000 of them took 5 MiB of the controller's schedule).
        return Action::await_change();
    }
    Action::requeue(delay)
}
