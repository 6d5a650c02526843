//! `UserInvitation`: the users to invite, and the outcome per user.

// kube-derive repeats `type_` in every printcolumn(...); clippy reads that as a duplicate.
#![allow(clippy::duplicated_attributes)]

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::address;

/// `UserInvitation` asks the operator to invite users through an invite API and records the
/// outcome per user in its status. Its spec is the invitation request of the endpoint's API:
/// `users` for UserInvite endpoints, `orgInvitation` for OrgInvitation endpoints.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "invite.operators.dev",
    version = "v1alpha1",
    kind = "UserInvitation",
    doc = "UserInvitation asks invite-operator to invite the listed people through an invite API (the endpoint it names) and shows, per person, where their invitation stands.",
    derive = "PartialEq",
    namespaced,
    status = "UserInvitationStatus",
    shortname = "uinv",
    category = "invitations",
    printcolumn(
        name = "Endpoint",
        type_ = "string",
        json_path = ".spec.endpointRef.name"
    ),
    printcolumn(name = "Invited", type_ = "integer", json_path = ".status.invited"),
    printcolumn(name = "Failed", type_ = "integer", json_path = ".status.failed"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        priority = 1,
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.users) != has(self.orgInvitation)").message("exactly one of users (UserInvite) or orgInvitation (OrgInvitation) must be set"))]
pub struct UserInvitationSpec {
    /// The endpoint to invite through. Defaults to the ClusterInvitationEndpoint named `default`.
    #[serde(default)]
    pub endpoint_ref: EndpointRef,
    /// Users to invite through a UserInvite endpoint (the `UserToCreateArray` body of
    /// `POST /api/v2/user/invite`), one entry per email address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1000))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["emailAddress".into()]))]
    pub users: Option<Vec<UserToCreate>>,
    /// The organization invitation request sent to an OrgInvitation endpoint
    /// (`UsersOrganizationInvitationRequest`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org_invitation: Option<Box<OrgInvitationRequest>>,
    /// InviteOnly: invite, and never change a user that exists. Enforce: also keep the
    /// permissions, user groups and roles of the listed users as the spec says, correcting drift.
    #[serde(default)]
    pub access_policy: AccessPolicy,
    /// What happens to a user removed from the spec or when the resource is deleted. Retain
    /// leaves the user alone; Delete deletes the user (UserInvite) or revokes a pending
    /// invitation (OrgInvitation).
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
    /// Send the invitation again, once per expiry, when it expired unaccepted (24 h for
    /// UserInvite, 7 days for OrgInvitation).
    #[serde(default)]
    pub reinvite_expired: bool,
}

impl UserInvitation {
    /// Whether the [`PAUSED_ANNOTATION`](super::PAUSED_ANNOTATION) stops all API calls for it.
    pub fn is_paused(&self) -> bool {
        self.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(super::PAUSED_ANNOTATION))
            .is_some_and(|v| v == "true")
    }
}

impl UserInvitationSpec {
    /// The entry of `spec.users` the planner requests for `person` (see [`address::person`]):
    /// the first whose address is plain and names that person. A later case variant or another
    /// spelling of the mailbox is never taken for it (its grants are not the person's).
    pub fn user(&self, person: &str) -> Option<&UserToCreate> {
        self.users.iter().flatten().find(|u| {
            address::same_person(&u.email_address, person)
                && address::parse(&u.email_address).is_ok()
        })
    }
}

/// Reference to the endpoint a UserInvitation uses.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndpointRef {
    /// InvitationEndpoint (same namespace) or ClusterInvitationEndpoint.
    #[serde(default)]
    pub kind: EndpointKind,
    /// Name of the endpoint.
    #[serde(default = "default_endpoint_name")]
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

impl Default for EndpointRef {
    fn default() -> Self {
        EndpointRef {
            kind: EndpointKind::default(),
            name: default_endpoint_name(),
        }
    }
}

fn default_endpoint_name() -> String {
    "default".to_string()
}

/// Kind of endpoint referenced.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, schemars::JsonSchema,
)]
pub enum EndpointKind {
    /// A namespaced InvitationEndpoint in the UserInvitation's namespace.
    InvitationEndpoint,
    /// A cluster-scoped ClusterInvitationEndpoint.
    #[default]
    ClusterInvitationEndpoint,
}

impl std::fmt::Display for EndpointKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EndpointKind::InvitationEndpoint => "InvitationEndpoint",
            EndpointKind::ClusterInvitationEndpoint => "ClusterInvitationEndpoint",
        })
    }
}

/// One user to invite (`UserToCreate` of the Invite Users API).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserToCreate {
    /// Email address of the user; the user's unique identifier. A plain address
    /// (`local@domain.tld`, ASCII): no display name, angle brackets, comment, quotes, route,
    /// backslash or whitespace, no dot at either end of a part or two in a row, a domain of two
    /// or more labels without a trailing dot. Compared ignoring case.
    #[schemars(email, length(min = 3, max = 254), transform = super::address::pattern)]
    pub email_address: String,
    /// Permissions to grant, e.g. `dashboard_management`.
    #[serde(default)]
    #[schemars(length(max = 64), inner(length(min = 1, max = 128)))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub groups: Vec<String>,
    /// Ids of the user groups to add the user to.
    #[serde(default)]
    #[schemars(length(max = 64), inner(length(min = 1, max = 128)))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub user_groups: Vec<String>,
    /// Ids of the roles to assign.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 128)))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub roles: Vec<String>,
}

/// The organization invitation request (`UsersOrganizationInvitationRequest`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrgInvitationRequest {
    /// Usernames (email addresses) of the users to invite: plain addresses, as for
    /// `users[].emailAddress`. Compared ignoring case.
    #[schemars(
        length(min = 1, max = 1000),
        inner(email, length(min = 3, max = 254)),
        transform = super::address::pattern_on_items
    )]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub usernames: Vec<String>,
    /// Organization roles to grant, e.g. `[{name: org_member}]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub organization_roles: Vec<RoleBinding>,
    /// Deprecated: organization role names; use organizationRoles instead.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 256)))]
    pub org_role_names: Vec<String>,
    /// Service roles to grant, per service definition.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub service_roles_dtos: Vec<ServiceRoles>,
    /// Custom roles to grant.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub custom_roles: Vec<RoleBinding>,
    /// Ids of custom groups to add the users to (at most 15).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 15), inner(length(min = 1, max = 256)))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub custom_groups_ids: Vec<String>,
    /// The person on whose behalf the invitation is sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 254))]
    pub invited_by: Option<String>,
    /// Do not send notification emails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_notify: Option<bool>,
    /// Do not send emails to users that have no platform profile yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_notify_registration: Option<bool>,
}

/// A role binding (`BaseRoleBindingDto`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RoleBinding {
    /// Role name, e.g. `org_member`.
    #[schemars(length(min = 1, max = 256))]
    pub name: String,
    /// Resource the role applies to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub resource: Option<String>,
    /// DIRECT, GROUP or NESTED.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub membership_type: Option<String>,
    /// Expiry of the binding, in seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
}

/// Service roles for one service definition (`ServiceRolesDto`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceRoles {
    /// Link of the service definition, e.g. `/csp/gateway/slc/api/definitions/paid/...`.
    #[schemars(length(min = 1, max = 1024))]
    pub service_definition_link: String,
    /// Names of the service roles.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 256)))]
    pub service_role_names: Vec<String>,
    /// Service role bindings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub service_roles: Vec<RoleBinding>,
}

/// Whether the operator manages users after inviting them.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum AccessPolicy {
    /// Invite users; never change a user that exists.
    #[default]
    InviteOnly,
    /// Also keep permissions, user groups and roles of the listed users as the spec says.
    Enforce,
}

/// What happens to users removed from the spec and when the resource is deleted.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum DeletionPolicy {
    /// Leave the user and any pending invitation alone.
    #[default]
    Retain,
    /// Delete the user (UserInvite) or revoke the pending invitation (OrgInvitation).
    Delete,
}

/// Observed outcome of a UserInvitation.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserInvitationStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` is True when every user is invited (or already a member). When False its reason
    /// is one of Pending, PartiallyFailed, Failed, EndpointNotFound, EndpointNotReady,
    /// EndpointMismatch, NotAllowed, InvalidSpec, Paused. Beside it, as kstatus (Flux, Argo
    /// CD) reads them: `Reconciling` True while work is pending or the resource waits for
    /// something that appears by itself, `Stalled` True (with Ready's reason) when a person
    /// must act; both absent otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The API the users below were invited or adopted on. Work on one person is serialized
    /// per API, whichever endpoint object names it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api: Option<ApiIdentity>,
    /// The endpoint the users below were invited or adopted through. Ownership counts only
    /// on this endpoint and `api`: when the resource's endpoint or its API changes (another
    /// endpointRef, an edited url or organizationId, a recreated endpoint), ownership is
    /// dropped and nothing is removed, revoked or enforced because of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<EndpointBinding>,
    /// One entry per requested user, in spec order; then entries of users no longer requested
    /// that still need work (a removal owed under deletionPolicy Delete, or an invite request
    /// still settling).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<UserStatus>,
    /// Identifiers of the users that were invited or are members, for scripts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub invited_users: Vec<String>,
    /// Number of users invited or already members.
    #[serde(default)]
    pub invited: u32,
    /// Number of users whose invitation failed.
    #[serde(default)]
    pub failed: u32,
}

/// Which API a status refers to: the endpoint's URL in canonical form (scheme and host
/// lowercased, default port dropped, path normalized) and, for OrgInvitation, the organization.
#[derive(
    Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, schemars::JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub struct ApiIdentity {
    /// Canonical base URL of the API.
    pub url: String,
    /// Organization (OrgInvitation only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization_id: Option<String>,
}

impl std::fmt::Display for ApiIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.organization_id {
            Some(org) => write!(f, "{} (organization {org})", self.url),
            None => f.write_str(&self.url),
        }
    }
}

/// The endpoint object a status was established through.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndpointBinding {
    /// The API flavour the endpoint speaks.
    pub api: crate::api::ApiFlavor,
    /// InvitationEndpoint (in the resource's namespace) or ClusterInvitationEndpoint.
    pub kind: EndpointKind,
    /// Name of the endpoint.
    pub name: String,
    /// Uid of the endpoint: a deleted and recreated endpoint is another endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

impl std::fmt::Display for EndpointBinding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {:?}", self.kind, self.name)
    }
}

/// Outcome for one user.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserStatus {
    /// The requested email address (lowercased; an invalid entry, such as a case-variant
    /// duplicate or an address that is not plain, keeps its spelling).
    pub email_address: String,
    /// Identifier of the user in the API (may differ from the email address), or the
    /// invitation reference for OrgInvitation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identifier: Option<String>,
    /// Where this user's invitation stands.
    pub state: UserState,
    /// Whether this resource may change, delete or revoke what the API holds for this user:
    /// Created when this resource sent the invitation, Adopted when the user existed before and
    /// the endpoint allows adopting existing users. Absent: the user is only observed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ownership: Option<Ownership>,
    /// Why the user is Failed: InvalidSpec (the spec lists the address twice, ignoring case, or
    /// the address is not a plain email address) or Rejected (the API refused the invitation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<FailureReason>,
    /// When the invitation was sent (for Inviting: when the request was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invited_at: Option<Timestamp>,
    /// Inviting only: when an invite request whose answer was never seen can no longer act,
    /// on any replica's clock (recorded with the intent: two request timeouts plus the
    /// tolerated clock skew). Until then nobody invites this person again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settles_at: Option<Timestamp>,
    /// When the invitation expires unaccepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Timestamp>,
    /// What happened, in a sentence (e.g. the API's reason for a failure; truncated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1100))]
    pub message: Option<String>,
}

/// Why this resource may act on a user in the API.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, schemars::JsonSchema)]
pub enum Ownership {
    /// This resource sent the invitation.
    Created,
    /// The user existed before and this resource adopted them (accessPolicy Enforce or
    /// deletionPolicy Delete on an endpoint that allows adoption).
    Adopted,
}

/// Why a user is Failed.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, schemars::JsonSchema)]
pub enum FailureReason {
    /// The spec lists this address more than once (addresses are compared ignoring case), or
    /// the address is not a plain email address.
    InvalidSpec,
    /// The API refused to invite this user.
    Rejected,
}

/// Where one user's invitation stands.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, schemars::JsonSchema)]
pub enum UserState {
    /// Not invited yet (waiting for the endpoint, another resource or a retry).
    Pending,
    /// The invitation is being sent; recorded before the call so a crash never sends it twice.
    Inviting,
    /// The invitation was sent and is not accepted yet.
    Invited,
    /// The user accepted the invitation.
    Accepted,
    /// The user existed before; no invitation was sent.
    AlreadyMember,
    /// The invitation expired unaccepted.
    Expired,
    /// The API refused to invite this user, or the spec cannot name them (the address is listed
    /// twice or is not plain); see reason.
    Failed,
    /// The pending invitation was revoked (outside this resource).
    Revoked,
    /// The user no longer exists in the API (deleted outside this resource).
    Deleted,
}

impl UserState {
    /// Every state, in lifecycle order.
    pub const ALL: [UserState; 9] = [
        UserState::Pending,
        UserState::Inviting,
        UserState::Invited,
        UserState::Accepted,
        UserState::AlreadyMember,
        UserState::Expired,
        UserState::Failed,
        UserState::Revoked,
        UserState::Deleted,
    ];

    /// Whether the user counts as invited (Ready): the invitation is out or the person is in.
    pub fn is_invited(self) -> bool {
        match self {
            UserState::Invited | UserState::Accepted | UserState::AlreadyMember => true,
            UserState::Pending
            | UserState::Inviting
            | UserState::Expired
            | UserState::Failed
            | UserState::Revoked
            | UserState::Deleted => false,
        }
    }

    /// Whether the user still waits for an invitation to go out or settle.
    pub fn is_waiting(self) -> bool {
        match self {
            UserState::Pending | UserState::Inviting => true,
            UserState::Invited
            | UserState::Accepted
            | UserState::AlreadyMember
            | UserState::Expired
            | UserState::Failed
            | UserState::Revoked
            | UserState::Deleted => false,
        }
    }

    /// Whether an owner in this state keeps the person: no other resource may invite or
    /// adopt them meanwhile.
    pub fn holds_person(self) -> bool {
        match self {
            UserState::Inviting
            | UserState::Invited
            | UserState::Accepted
            | UserState::AlreadyMember => true,
            UserState::Pending
            | UserState::Expired
            | UserState::Failed
            | UserState::Revoked
            | UserState::Deleted => false,
        }
    }

    /// Whether deletionPolicy Delete has something to remove for an owned user in this state.
    pub fn has_something_to_remove(self) -> bool {
        match self {
            UserState::Inviting
            | UserState::Invited
            | UserState::Accepted
            | UserState::AlreadyMember
            | UserState::Expired => true,
            UserState::Pending | UserState::Failed | UserState::Revoked | UserState::Deleted => {
                false
            }
        }
    }

    /// The event reason announcing that a user reached this state on a check of the API, if
    /// it is news worth an event.
    pub fn observed_event(self) -> Option<&'static str> {
        match self {
            UserState::Accepted => Some("Accepted"),
            UserState::Expired => Some("Expired"),
            UserState::Revoked => Some("Revoked"),
            UserState::Deleted => Some("Deleted"),
            UserState::Pending
            | UserState::Inviting
            | UserState::Invited
            | UserState::AlreadyMember
            | UserState::Failed => None,
        }
    }
}

impl std::fmt::Display for UserState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}
