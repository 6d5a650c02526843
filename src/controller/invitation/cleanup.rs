//! deletionPolicy Delete: the finalizer, held only while the policy is Delete, and the removal
//! of what a deleted resource owns. A deleted resource that is paused, invalid or blocked is
//! released at once with a `CleanupSkipped` event naming what was left behind. A resource whose
//! endpoint this controller does not serve (endpoint selectors) never gets here: its finalizer
//! and its users are the serving controller's.

use kube::{
    Api, ResourceExt,
    runtime::{controller::Action, events::EventType},
};

use crate::{
    api::{DeletionPolicy, UserInvitation, UserStatus},
    controller::{
        context::{Context, Shard},
        endpoints::Endpoints,
        error::{ReconcileError, resource_key},
        kubernetes::{
            events::{removal_reason, summarize_list},
            writes::set_finalizer,
        },
        state::holders::HolderLookup,
    },
    reconcile::Holders,
    reconcile::plan::{self, Blocked, ReadyReason, unsettled},
    reconcile::resolve,
};

/// Finalizer held while deletionPolicy Delete has cleanup to do.
pub const FINALIZER: &str = "invite.operators.dev/cleanup";

fn has_finalizer(invitation: &UserInvitation) -> bool {
    invitation.finalizers().iter().any(|f| f == FINALIZER)
}

/// Adds the finalizer when the policy is Delete and removes it otherwise. Returns the
/// resource's version after any change.
pub async fn hold_finalizer_if_needed(
    ctx: &Context,
    invitation: &UserInvitation,
) -> Result<String, kube::Error> {
    let wanted = invitation.spec.deletion_policy == DeletionPolicy::Delete;
    if wanted == has_finalizer(invitation) {
        return Ok(invitation.resource_version().unwrap_or_default());
    }
    let updated = set_finalizer(&api(ctx, invitation), invitation, FINALIZER, wanted).await?;
    Ok(updated.resource_version().unwrap_or_default())
}

fn api(ctx: &Context, invitation: &UserInvitation) -> Api<UserInvitation> {
    Api::namespaced(
        ctx.client.clone(),
        &invitation.namespace().unwrap_or_default(),
    )
}

/// What the resource owns that deletionPolicy Delete removes.
fn owned(invitation: &UserInvitation) -> Vec<UserStatus> {
    invitation
        .status
        .iter()
        .flat_map(|s| &s.users)
        .filter(|u| u.ownership.is_some() && u.state.has_something_to_remove())
        .cloned()
        .collect()
}

/// A deleted resource: removes what it owns, then releases the finalizer.
pub async fn on_deletion(
    shard: &Shard,
    invitation: &UserInvitation,
    paused: bool,
) -> Result<Action, ReconcileError> {
    let ctx = &shard.ctx;
    // Its people stay held (the holder index follows the status) until the object is gone;
    // then those of requests still settling stay held until they settle.
    if !has_finalizer(invitation) {
        return Ok(Action::await_change());
    }
    let owned = owned(invitation);
    if !owned.is_empty() {
        let outcome = if paused {
            Cleanup::Skipped(Blocked::new(ReadyReason::Paused, "the resource is paused"))
        } else {
            remove_owned(shard, invitation, &owned).await?
        };
        match outcome {
            Cleanup::WaitToSettle(wait) => return Ok(Action::requeue(wait)),
            // Another controller's now: its finalizer is that controller's to release.
            Cleanup::NotServed => return Ok(Action::await_change()),
            Cleanup::Done => {}
            Cleanup::Skipped(blocked) => {
                let left: Vec<String> = owned.iter().map(|u| u.email_address.clone()).collect();
                let note = format!(
                    "Deleted without removing {} ({}): left behind {}",
                    left.len(),
                    blocked.message,
                    summarize_list(&left)
                );
                ctx.events
                    .publish(
                        invitation,
                        EventType::Warning,
                        "CleanupSkipped",
                        "Delete",
                        note,
                    )
                    .await;
            }
        }
    }
    set_finalizer(&api(ctx, invitation), invitation, FINALIZER, false).await?;
    ctx.memory.forget(&resource_key(invitation));
    Ok(Action::await_change())
}

/// How the removal of a deleted resource's users went.
enum Cleanup {
    /// Everything owned was removed.
    Done,
    /// An unanswered invite request must settle first (removing now could miss what it
    /// creates).
    WaitToSettle(std::time::Duration),
    /// The endpoint cannot be used; nothing was removed.
    Skipped(Blocked),
    /// The endpoint left this controller's selection since the pass began: nothing was
    /// removed, and the resource is left alone.
    NotServed,
}

/// Removes every owned user.
async fn remove_owned(
    shard: &Shard,
    invitation: &UserInvitation,
    owned: &[UserStatus],
) -> Result<Cleanup, ReconcileError> {
    let ctx = &shard.ctx;
    // The endpoint must still serve the resource, as for any pass: found, of the right API,
    // allowed for its namespace and grants, with its token. Otherwise nothing is removed
    // (and the event says what was left behind).
    let endpoints = Endpoints::of(shard);
    if !endpoints.serves(invitation) {
        return Ok(Cleanup::NotServed);
    }
    let resolved = match resolve::resolve(&endpoints, endpoints.rules(), invitation, 0).await? {
        Ok(resolved) => resolved,
        Err(blocked) => return Ok(Cleanup::Skipped(blocked)),
    };
    let now = plan::now();
    // Only on the endpoint and API the entries were made on.
    let status = invitation.status.clone().unwrap_or_default();
    let endpoint = resolved.endpoint.binding();
    if !matches!(
        plan::bind_to_endpoint(&status, &resolved.identity, &endpoint, now),
        plan::Binding::Same(_)
    ) {
        return Ok(Cleanup::Skipped(Blocked::new(
            ReadyReason::EndpointMismatch,
            format!(
                "the users were invited or adopted through another endpoint or API than {endpoint} ({}), so nothing is removed there",
                resolved.identity
            ),
        )));
    }
    if let Some(wait) = owned
        .iter()
        .filter(|u| unsettled(u, now))
        .filter_map(|u| std::time::Duration::try_from(u.settles_at?.duration_since(now)).ok())
        .min()
    {
        return Ok(Cleanup::WaitToSettle(wait));
    }
    let addresses = owned.iter().map(|u| u.email_address.clone()).collect();
    let _claim = ctx.claims.claim(&resolved.identity, addresses).await;
    let reason = removal_reason(resolved.api.flavor());
    let holders = HolderLookup {
        index: &ctx.holders,
        api: &resolved.identity,
        me: &resource_key(invitation),
    };
    for user in owned {
        if let Some(holder) = holders.other_holder(&user.email_address) {
            let note = format!(
                "{} is held by UserInvitation {holder} now: nothing of theirs is removed",
                user.email_address
            );
            ctx.events
                .publish(invitation, EventType::Normal, "LeftAlone", "Delete", note)
                .await;
            continue;
        }
        let done = resolved
            .api
            .remove(&user.email_address, user.identifier.as_deref())
            .await?;
        if let Some(done) = done {
            ctx.events
                .publish(invitation, EventType::Normal, reason, "Delete", done)
                .await;
        }
    }
    Ok(Cleanup::Done)
}
