//! `InviteIntent`: the intent journal of one coalesced invite batch. Cluster-internal: the
//! leader creates one in its own namespace before the batch's invite call and deletes it once
//! every address's outcome is recorded in its resource's status. Tenants have no access to it.

use jiff::Timestamp;
use kube::CustomResource;
use serde::{Deserialize, Serialize};

use super::{ApiFlavor, ApiIdentity, EndpointBinding, EndpointKind};

/// The most addresses one journal object lists (a larger batch is recorded as several
/// objects, all created before its call): about 1 KiB each at most, far below the object size
/// limit.
pub const MAX_INTENT_ADDRESSES: usize = 1000;

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
    pub endpoint: IntentEndpoint,
    /// The API the request acts on (normalized base URL, organization).
    pub api: IntentApi,
    /// Each address of the request.
    #[schemars(length(max = 1000))]
    pub addresses: Vec<IntentAddress>,
}

/// The endpoint object an invite request goes through.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IntentEndpoint {
    /// The API flavour the endpoint speaks.
    pub api: ApiFlavor,
    /// InvitationEndpoint or ClusterInvitationEndpoint.
    pub kind: EndpointKind,
    /// Name of the endpoint.
    #[schemars(length(max = 253))]
    pub name: String,
    /// Uid of the endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub uid: Option<String>,
}

/// The API an invite request acts on.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IntentApi {
    /// Canonical base URL of the API.
    #[schemars(length(max = 4096))]
    pub url: String,
    /// Organization (OrgInvitation only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub organization_id: Option<String>,
}

impl From<&EndpointBinding> for IntentEndpoint {
    fn from(b: &EndpointBinding) -> IntentEndpoint {
        IntentEndpoint {
            api: b.api,
            kind: b.kind,
            name: b.name.clone(),
            uid: b.uid.clone(),
        }
    }
}

impl From<&IntentEndpoint> for EndpointBinding {
    fn from(e: &IntentEndpoint) -> EndpointBinding {
        EndpointBinding {
            api: e.api,
            kind: e.kind,
            name: e.name.clone(),
            uid: e.uid.clone(),
        }
    }
}

impl From<&ApiIdentity> for IntentApi {
    fn from(a: &ApiIdentity) -> IntentApi {
        IntentApi {
            url: a.url.clone(),
            organization_id: a.organization_id.clone(),
        }
    }
}

impl From<&IntentApi> for ApiIdentity {
    fn from(a: &IntentApi) -> ApiIdentity {
        ApiIdentity {
            url: a.url.clone(),
            organization_id: a.organization_id.clone(),
        }
    }
}

/// One address of an invite request in flight.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IntentAddress {
    /// The address invited.
    #[schemars(length(max = 254))]
    pub email_address: String,
    /// The UserInvitation it is invited for.
    pub resource: IntentResource,
    /// When the intent was recorded (as the resource's status records `invitedAt`).
    #[schemars(length(max = 64))]
    pub invited_at: Timestamp,
    /// When the request can no longer act, on any replica's clock: until then nobody invites
    /// this person again; after it, the person is looked up.
    #[schemars(length(max = 64))]
    pub settles_at: Timestamp,
}

/// The UserInvitation an address is invited for.
#[derive(
    Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, Hash, schemars::JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub struct IntentResource {
    /// Namespace of the UserInvitation.
    #[schemars(length(max = 63))]
    pub namespace: String,
    /// Name of the UserInvitation.
    #[schemars(length(max = 253))]
    pub name: String,
    /// Uid of the UserInvitation: a recreated resource is another resource.
    #[schemars(length(max = 128))]
    pub uid: String,
}
