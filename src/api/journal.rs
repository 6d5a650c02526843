//! `InviteIntent`: the intent journal of one coalesced invite batch. Cluster-internal: the
//! leader creates one in its own namespace before the batch's invite call and deletes it once
//! every address's outcome is recorded in its resource's status. Tenants have no access to it.

use jiff::Timestamp;
use kube::CustomResource;
use serde::{Deserialize, Serialize};

use super::{ApiIdentity, EndpointBinding};

/// `InviteIntent` records, before one coalesced invite call, which addresses it invites for
/// which resource, so that a controller that crashes before the outcomes are in the statuses
/// never invites them twice.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[kube(
    group = "invite.operators.dev",
    version = "v1alpha1",
    kind = "InviteIntent",
    doc = "InviteIntent is invite-operator's own record of one invite request in flight (the intent journal): written before the request, deleted once each address's outcome is in its UserInvitation's status. Not for people to create or edit.",
    derive = "PartialEq",
    namespaced,
    category = "invite-operator-internal"
)]
#[serde(rename_all = "camelCase")]
pub struct InviteIntentSpec {
    /// The endpoint object the request goes through (flavour, kind, name, uid).
    pub endpoint: EndpointBinding,
    /// The API the request acts on (normalized base URL, organization).
    pub api: ApiIdentity,
    /// Each address of the request.
    pub addresses: Vec<IntentAddress>,
}

/// One address of an invite request in flight.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IntentAddress {
    /// The address invited.
    pub email_address: String,
    /// The UserInvitation it is invited for.
    pub resource: IntentResource,
    /// When the intent was recorded (as the resource's status records `invitedAt`).
    pub invited_at: Timestamp,
    /// When the request can no longer act, on any replica's clock: until then nobody invites
    /// this person again; after it, the person is looked up.
    pub settles_at: Timestamp,
}

/// The UserInvitation an address is invited for.
#[derive(
    Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, Hash, schemars::JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub struct IntentResource {
    /// Namespace of the UserInvitation.
    pub namespace: String,
    /// Name of the UserInvitation.
    pub name: String,
    /// Uid of the UserInvitation: a recreated resource is another resource.
    pub uid: String,
}
