//! The Kubernetes floor: how long the API server alone takes for the writes a rollout needs.
//!
//! The exactly-once rules make a rollout write its intent durably before any invitation. With
//! the intent journal that is one `InviteIntent` object per coalesced batch (created before
//! the call, deleted once the outcomes are recorded), then one status write (the outcome) and
//! one event per resource. Over the converged resources of the backlog run, with the
//! controller stopped, the benchmark itself makes exactly those writes, `concurrency`
//! resources at once: per group of `concurrency` resources one journal object naming their
//! addresses is created, then each resource's converged status is written (through the
//! controller's own writer: JSON patches guarded by the resourceVersion) with one event, then
//! the object is deleted. No invite API, no controller: the time it takes is the least any
//! controller honouring the rules needs on this API server, beside which the convergence time
//! is read.

use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use invite_operator::{
    api::{
        ApiFlavor, EndpointKind, IntentAddress, IntentApi, IntentEndpoint, IntentResource,
        InviteIntent, InviteIntentSpec, UserInvitation,
    },
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
    api::{DeleteParams, ListParams, PostParams},
};

use crate::BenchResult;

/// What the floor run did and how long it took.
pub struct Floor {
    /// Status writes made (one per resource).
    pub status_writes: usize,
    /// Journal writes made (a create and a delete per group of `concurrency` resources).
    pub journal_writes: usize,
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
    let group = concurrency.max(1);
    let journal: Api<InviteIntent> = Api::namespaced(client.clone(), ns);
    let started = Instant::now();
    let mut journal_writes = 0;
    for (index, batch) in invitations.chunks(group).enumerate() {
        let intent = journal
            .create(&PostParams::default(), &intent_for(ns, index, batch))
            .await
            .map_err(|e| format!("create the journal object of batch {index}: {e}"))?;
        futures::stream::iter(batch.iter().cloned())
            .map(|invitation| write_one(client, &events, invitation))
            .buffer_unordered(group)
            .try_collect::<Vec<()>>()
            .await?;
        journal
            .delete(&intent.name_any(), &DeleteParams::default())
            .await
            .map_err(|e| format!("delete the journal object of batch {index}: {e}"))?;
        journal_writes += 2;
    }
    Ok(Floor {
        status_writes: resources,
        journal_writes,
        events: resources,
        concurrency: concurrency.clamp(1, resources.max(1)),
        took: started.elapsed(),
    })
}

/// The journal object of one batch: every address of its resources.
fn intent_for(ns: &str, index: usize, batch: &[UserInvitation]) -> InviteIntent {
    let now = Timestamp::now();
    let addresses = batch
        .iter()
        .flat_map(|invitation| {
            let resource = IntentResource {
                namespace: ns.to_string(),
                name: invitation.name_any(),
                uid: invitation.uid().unwrap_or_default(),
            };
            let users = invitation.status.as_ref().map(|s| s.users.clone());
            users
                .unwrap_or_default()
                .into_iter()
                .map(move |user| IntentAddress {
                    email_address: user.email_address,
                    resource: resource.clone(),
                    invited_at: now,
                    settles_at: now,
                })
        })
        .collect();
    let mut intent = InviteIntent::new(
        &format!("floor-{index:05}-{:08x}", rand::random::<u32>()),
        InviteIntentSpec {
            endpoint: IntentEndpoint {
                api: ApiFlavor::UserInvite,
                kind: EndpointKind::InvitationEndpoint,
                name: "floor".into(),
                uid: None,
            },
            api: IntentApi {
                url: "http://127.0.0.1/".into(),
                organization_id: None,
            },
            addresses,
        },
    );
    intent.metadata.namespace = Some(ns.to_string());
    intent
}

/// The outcome write (through the controller's own guarded status writer) and the event of
/// one resource.
async fn write_one(
    client: &Client,
    events: &Api<Event>,
    invitation: UserInvitation,
) -> BenchResult<()> {
    let name = invitation.name_any();
    let converged = invitation.status.clone().unwrap_or_default();
    let version = invitation.resource_version().unwrap_or_default();
    let mut writer = KubeStatusWriter::new(client.clone(), &invitation, version);
    writer
        .write(&converged)
        .await
        .map_err(|e| format!("status of {name}: {e}"))?;
    events
        .create(&PostParams::default(), &event_about(&invitation))
        .await
        .map_err(|e| format!("event about {name}: {e}"))?;
    Ok(())
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
