//! The Kubernetes floor: how long the API server alone takes for the writes a rollout needs.
//!
//! The exactly-once rules make every resource take two status writes (the `Inviting` intent
//! before any invitation, then the outcome) and one event. Over the converged resources of the
//! backlog run, with the controller stopped, the benchmark itself makes exactly those writes:
//! for each resource, its intent status, its converged status (through the controller's own
//! writer: JSON patches guarded by the resourceVersion) and one event, `concurrency` resources
//! at once. No invite API, no batching, no controller: the time it takes is the least any
//! controller honouring the rules needs on this API server, beside which the convergence time
//! is read.

use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use invite_operator::{
    api::{UserInvitation, UserInvitationStatus, UserState},
    controller::KubeStatusWriter,
    reconcile::StatusWriter,
};
use k8s_openapi::{
    api::{core::v1::ObjectReference, events::v1::Event},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::Timestamp,
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{ListParams, PostParams},
};

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
        .map(|invitation| write_one(client, &events, invitation))
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

/// The intent write, the outcome write (through the controller's own guarded status writer)
/// and the event of one resource.
async fn write_one(
    client: &Client,
    events: &Api<Event>,
    invitation: UserInvitation,
) -> BenchResult<()> {
    let name = invitation.name_any();
    let converged = invitation.status.clone().unwrap_or_default();
    let version = invitation.resource_version().unwrap_or_default();
    let mut writer = KubeStatusWriter::new(client.clone(), &invitation, version);
    for status in [intent(&converged), converged] {
        writer
            .write(&status)
            .await
            .map_err(|e| format!("status of {name}: {e}"))?;
    }
    events
        .create(&PostParams::default(), &event_about(&invitation))
        .await
        .map_err(|e| format!("event about {name}: {e}"))?;
    Ok(())
}

/// The status a pass writes before inviting: every user `Inviting`, not Ready yet.
fn intent(converged: &UserInvitationStatus) -> UserInvitationStatus {
    let mut status = converged.clone();
    for user in &mut status.users {
        user.state = UserState::Inviting;
        user.identifier = None;
        user.expires_at = None;
    }
    for condition in &mut status.conditions {
        condition.status = "False".into();
        condition.reason = "Inviting".into();
    }
    status
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
