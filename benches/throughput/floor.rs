//! The Kubernetes floor: how long the API server alone takes for the writes a rollout needs.
//!
//! The exactly-once rules make every resource take two status writes (the `Inviting` intent
//! before any invitation, then the outcome) and one event. Over the converged resources of the
//! backlog run, with the controller stopped, the benchmark itself makes exactly those writes:
//! for each resource, its intent status, its converged status (each a JSON patch guarded by
//! the resourceVersion, as the controller writes them) and one event, `concurrency` resources
//! at once. No invite API, no batching, no controller: the time it takes is the least any
//! controller honouring the rules needs on this API server, beside which the convergence time
//! is read.

use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use invite_operator::api::UserInvitation;
use k8s_openapi::{
    api::{core::v1::ObjectReference, events::v1::Event},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::Timestamp,
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{ListParams, Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};

use crate::BenchResult;

/// What the floor run did and how long it took.
pub struct Floor {
    /// Status writes made (two per resource).
    pub status_writes: usize,
    /// Events created (one per resource).
    pub events: usize,
    /// Resources written at once.
    pub concurrency: usize,
    /// From the first write to the last answer.
    pub took: Duration,
}

/// Writes every UserInvitation of `ns` as a rollout must (see the module docs), `concurrency`
/// resources at once.
pub async fn measure(client: &Client, ns: &str, concurrency: usize) -> BenchResult<Floor> {
    let api: Api<UserInvitation> = Api::namespaced(client.clone(), ns);
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    let invitations = api
        .list(&ListParams::default())
        .await
        .map_err(|e| format!("list UserInvitations in {ns}: {e}"))?
        .items;
    let resources = invitations.len();
    let started = Instant::now();
    futures::stream::iter(invitations)
        .map(|invitation| write_one(&api, &events, invitation))
        .buffer_unordered(concurrency.max(1))
        .try_collect::<Vec<()>>()
        .await?;
    Ok(Floor {
        status_writes: 2 * resources,
        events: resources,
        concurrency: concurrency.clamp(1, resources.max(1)),
        took: started.elapsed(),
    })
}

/// The intent write, the outcome write and the event of one resource.
async fn write_one(
    api: &Api<UserInvitation>,
    events: &Api<Event>,
    invitation: UserInvitation,
) -> BenchResult<()> {
    let name = invitation.name_any();
    let converged =
        serde_json::to_value(&invitation.status).map_err(|e| format!("status of {name}: {e}"))?;
    let version = invitation.resource_version().unwrap_or_default();
    let version = guarded_write(api, &name, &version, intent(&converged)).await?;
    guarded_write(api, &name, &version, converged).await?;
    events
        .create(&PostParams::default(), &event_about(&invitation))
        .await
        .map_err(|e| format!("event about {name}: {e}"))?;
    Ok(())
}

/// The status a pass writes before inviting: every user `Inviting`, not Ready yet.
fn intent(converged: &Value) -> Value {
    let mut status = converged.clone();
    if let Some(users) = status.get_mut("users").and_then(Value::as_array_mut) {
        for user in users {
            user["state"] = json!("Inviting");
            if let Some(entry) = user.as_object_mut() {
                entry.remove("identifier");
                entry.remove("expiresAt");
            }
        }
    }
    if let Some(conditions) = status.get_mut("conditions").and_then(Value::as_array_mut) {
        for condition in conditions {
            condition["status"] = json!("False");
            condition["reason"] = json!("Inviting");
        }
    }
    status
}

/// A JSON patch of the status guarded by `version`; returns the version it produced.
async fn guarded_write(
    api: &Api<UserInvitation>,
    name: &str,
    version: &str,
    status: Value,
) -> BenchResult<String> {
    let patch: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/metadata/resourceVersion", "value": version},
        {"op": "add", "path": "/status", "value": status},
    ]))
    .map_err(|e| e.to_string())?;
    let written = api
        .patch_status(name, &PatchParams::default(), &Patch::<()>::Json(patch))
        .await
        .map_err(|e| format!("status of {name}: {e}"))?;
    Ok(written.resource_version().unwrap_or_default())
}

/// An `Invited` event about `invitation`, as the controller publishes one.
fn event_about(invitation: &UserInvitation) -> Event {
    let name = invitation.name_any();
    Event {
        metadata: ObjectMeta {
            name: Some(format!("{name}.floor-{:08x}", rand::random::<u32>())),
            ..ObjectMeta::default()
        },
        event_time: Some(MicroTime(Timestamp::now())),
        action: Some("Invite".into()),
        reason: Some("Invited".into()),
        type_: Some("Normal".into()),
        note: Some(format!(
            "{} users invited (benchmark floor run)",
            invitation.status.as_ref().map_or(0, |s| s.users.len())
        )),
        reporting_controller: Some("invite-operator-bench".into()),
        reporting_instance: Some("invite-operator-bench".into()),
        regarding: Some(ObjectReference {
            api_version: Some(UserInvitation::api_version(&()).into_owned()),
            kind: Some(UserInvitation::kind(&()).into_owned()),
            name: Some(name),
            namespace: invitation.namespace(),
            uid: invitation.uid(),
            ..ObjectReference::default()
        }),
        ..Event::default()
    }
}
