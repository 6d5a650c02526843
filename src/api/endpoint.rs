//! `InvitationEndpoint` and `ClusterInvitationEndpoint`: where and with which credentials an
//! invite API is called (the cert-manager Issuer/ClusterIssuer pattern).

// kube-derive repeats `type_` in every printcolumn(...); clippy reads that as a duplicate.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// Which user-management API an endpoint speaks.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, schemars::JsonSchema)]
pub enum ApiFlavor {
    /// Invite Users API (`POST {url}/api/v2/user/invite`), authenticated with a Bearer API token.
    UserInvite,
    /// Organization invitations of a cloud services platform
    /// (`POST {url}/csp/gateway/am/api/orgs/{organizationId}/invitations`); the Secret holds an API
    /// token that is exchanged for short-lived access tokens.
    OrgInvitation,
}

impl std::fmt::Display for ApiFlavor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ApiFlavor::UserInvite => "UserInvite",
            ApiFlavor::OrgInvitation => "OrgInvitation",
        })
    }
}

/// A key of a Secret holding the API token.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Namespace of the Secret. Only for a ClusterInvitationEndpoint (default: the operator's
    /// namespace); a namespaced InvitationEndpoint always reads its own namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub namespace: Option<String>,
    /// Key within the Secret's data that holds the token.
    #[serde(default = "default_secret_key")]
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

fn default_secret_key() -> String {
    "token".to_string()
}

/// Credentials used to call the API.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndpointCredentials {
    /// The Secret key holding the token. UserInvite: the API token, sent as
    /// `Authorization: Bearer <token>`. OrgInvitation: an API token exchanged at
    /// `{tokenUrl | url}/csp/gateway/am/api/auth/api-tokens/authorize` for access tokens.
    pub secret_ref: SecretKeyRef,
}

/// Connection settings shared by both endpoint kinds.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.api != 'OrgInvitation' || (has(self.organizationId) && self.organizationId != '')").message("organizationId is required when api is OrgInvitation"))]
pub struct EndpointConnection {
    /// Which API this endpoint speaks: UserInvite or OrgInvitation.
    pub api: ApiFlavor,
    /// Base URL of the API, e.g. `https://example.wavefront.com` or
    /// `https://console.cloud.vmware.com`. Must be `https://`; plain `http://` only to a
    /// loopback address (or when the controller allows it with `--allow-insecure-http`).
    /// No credentials in the URL.
    #[schemars(length(min = 1, max = 2048), regex(pattern = r"^https?://[^\s]+$"))]
    pub url: String,
    /// Organization whose invitations are managed (OrgInvitation only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub organization_id: Option<String>,
    /// Base URL of the token exchange when it differs from `url` (OrgInvitation only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048), regex(pattern = r"^https?://[^\s]+$"))]
    pub token_url: Option<String>,
    /// Credentials used to call the API.
    pub credentials: EndpointCredentials,
    /// PEM bundle of extra CA certificates to trust. TLS is always verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 65536))]
    pub ca_bundle: Option<String>,
    /// Client-side rate limit in requests per second, shared by everything using this endpoint
    /// (a burst of as many). 429 answers pause the endpoint for their Retry-After.
    #[serde(default = "default_requests_per_second")]
    #[schemars(range(min = 1, max = 1000))]
    pub requests_per_second: u32,
    /// Timeout of one API request, in seconds (at most 120). An invite request whose answer
    /// was lost blocks a new invitation of its users for two timeouts, so keep it short.
    #[serde(default = "default_timeout_seconds")]
    #[schemars(range(min = 1, max = 120))]
    pub timeout_seconds: u32,
}

/// Neither API documents a request rate limit; both answer 429 when throttled, which pauses
/// the endpoint for its `Retry-After`. Coalesced calls carry up to 500 addresses each, so 50
/// calls a second never bind a rollout of thousands of resources (see docs/benchmark.md),
/// while a runaway loop is still held to a rate any production API serves.
fn default_requests_per_second() -> u32 {
    50
}

fn default_timeout_seconds() -> u32 {
    30
}

/// Declares an endpoint kind: the `#[kube]` arguments both kinds share (group, version, status,
/// category and the printer columns API, URL, Ready and Age) with the kind's own (in braces),
/// on the spec struct that follows.
macro_rules! endpoint_kind {
    ({ $($own:tt)* } $spec:item) => {
        #[derive(CustomResource)]
        #[kube(
            group = "invite.operators.dev",
            version = "v1alpha1",
            $($own)*
            derive = "PartialEq",
            status = "EndpointStatus",
            category = "invitations",
            printcolumn(name = "API", type_ = "string", json_path = ".spec.api"),
            printcolumn(name = "URL", type_ = "string", json_path = ".spec.url"),
            printcolumn(
                name = "Ready",
                type_ = "string",
                json_path = ".status.conditions[?(@.type==\"Ready\")].status"
            ),
            printcolumn(
                name = "Age",
                type_ = "date",
                json_path = ".metadata.creationTimestamp"
            )
        )]
        $spec
    };
}

endpoint_kind! {
    {
        kind = "InvitationEndpoint",
        doc = "InvitationEndpoint is a namespace's own place to send invitations: which invite API, its URL, and the Secret in the same namespace holding the team's token.",
        namespaced,
        shortname = "iep",
    }
    /// `InvitationEndpoint` is a namespaced place to send invitations: which API, its URL and the
    /// Secret (in the same namespace) holding the credentials.
    #[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
    #[serde(rename_all = "camelCase")]
    #[x_kube(validation = Rule::new("!has(self.credentials.secretRef.__namespace__)").message("a namespaced InvitationEndpoint reads its Secret from its own namespace; remove credentials.secretRef.namespace"))]
    pub struct InvitationEndpointSpec {
        /// Connection settings.
        #[serde(flatten)]
        pub connection: EndpointConnection,
    }
}

endpoint_kind! {
    {
        kind = "ClusterInvitationEndpoint",
        doc = "ClusterInvitationEndpoint is the platform's shared place to send invitations: which invite API, its URL and token Secret, which namespaces may use it and what they may grant through it.",
        shortname = "ciep",
    }
    /// `ClusterInvitationEndpoint` is a cluster-wide place to send invitations, usable from the
    /// namespaces its `namespaceSelector` selects and limited to what `allowed` lists.
    #[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
    #[serde(rename_all = "camelCase")]
    pub struct ClusterInvitationEndpointSpec {
        /// Connection settings.
        #[serde(flatten)]
        pub connection: EndpointConnection,
        /// Namespaces whose UserInvitations may use this endpoint; empty or absent selects all.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub namespace_selector: Option<LabelSelector>,
        /// What invitations through this endpoint may grant and whether they may adopt existing
        /// users: deny by default (see AllowedGrants). Absent: plain membership only.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub allowed: Option<AllowedGrants>,
        /// Most users a single UserInvitation may list when it uses this endpoint.
        #[serde(default = "default_max_users")]
        #[schemars(range(min = 1, max = 1000))]
        pub max_users_per_invitation: u32,
    }
}

fn default_max_users() -> u32 {
    100
}

/// What invitations through a ClusterInvitationEndpoint may grant, and whether they may
/// reach users that existed before. Deny by default: every field of a UserInvitation that
/// grants access may only use values its list names (`"*"` allows any value), and a field
/// whose list is empty may not be used at all (reason NotAllowed). accessPolicy Enforce never
/// grants or revokes anything outside these lists. Without `allowed`, an endpoint grants plain
/// membership only: no UserInvite groups, userGroups or roles, and only the OrgInvitation
/// organization role `org_member`; existing users are not adopted.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct AllowedGrants {
    /// Permissions (`users[].groups` of the UserInvite API).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), inner(length(min = 1, max = 256)))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub groups: Vec<String>,
    /// User group ids (`users[].userGroups` of the UserInvite API).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), inner(length(min = 1, max = 256)))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub user_groups: Vec<String>,
    /// Role ids (`users[].roles` of the UserInvite API).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), inner(length(min = 1, max = 256)))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub roles: Vec<String>,
    /// Organization role names (OrgInvitation `organizationRoles[].name` and `orgRoleNames`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), inner(length(min = 1, max = 256)))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub organization_roles: Vec<String>,
    /// Service definition links (OrgInvitation `serviceRolesDtos[].serviceDefinitionLink`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), inner(length(min = 1, max = 1024)))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub service_definition_links: Vec<String>,
    /// Service role names (OrgInvitation `serviceRolesDtos[].serviceRoleNames` and
    /// `serviceRoles[].name`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), inner(length(min = 1, max = 256)))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub service_role_names: Vec<String>,
    /// Custom role names (OrgInvitation `customRoles[].name`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), inner(length(min = 1, max = 256)))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub custom_roles: Vec<String>,
    /// Custom group ids (OrgInvitation `customGroupsIds`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), inner(length(min = 1, max = 256)))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub custom_groups_ids: Vec<String>,
    /// Resources that role bindings may name (OrgInvitation `resource` of
    /// `organizationRoles`, `customRoles` and `serviceRoles`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), inner(length(min = 1, max = 1024)))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub resources: Vec<String>,
    /// Who invitations may be sent on behalf of (OrgInvitation `invitedBy`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), inner(length(min = 1, max = 254)))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub invited_by: Vec<String>,
    /// Whether accessPolicy Enforce and deletionPolicy Delete may reach users that existed
    /// before an invitation (adopting them). Default false: existing users are reported and
    /// left alone. (A namespaced InvitationEndpoint always allows it: the team brought its own
    /// token.)
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub adopt_existing_users: bool,
}

/// The value of an `allowed` list that allows any value.
pub const ANY_VALUE: &str = "*";

/// The least-privileged organization role of the OrgInvitation API: plain membership.
pub const LEAST_ORGANIZATION_ROLE: &str = "org_member";

/// What a ClusterInvitationEndpoint without `allowed` permits: plain membership only (the
/// OrgInvitation role `org_member`; no UserInvite permissions, user groups or roles, no
/// service roles, custom roles or groups), and no adoption of existing users.
pub static MEMBERSHIP_ONLY: std::sync::LazyLock<AllowedGrants> =
    std::sync::LazyLock::new(|| AllowedGrants {
        organization_roles: vec![LEAST_ORGANIZATION_ROLE.to_string()],
        ..AllowedGrants::default()
    });

/// Observed state of an endpoint.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndpointStatus {
    /// `Ready`: the credentials resolve (and, for OrgInvitation, the token exchange works).
    /// Beside it (kstatus): `Reconciling` True while the Secret is missing or the API is
    /// unreachable, `Stalled` True (with Ready's reason) when a person must act.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Either kind of endpoint, with what the reconciler needs from it.
#[derive(Clone, Debug, PartialEq)]
pub enum AnyEndpoint {
    /// A namespaced `InvitationEndpoint`.
    Namespaced(Box<InvitationEndpoint>),
    /// A `ClusterInvitationEndpoint`.
    Cluster(Box<ClusterInvitationEndpoint>),
}

impl AnyEndpoint {
    /// Connection settings.
    pub fn connection(&self) -> &EndpointConnection {
        match self {
            AnyEndpoint::Namespaced(e) => &e.spec.connection,
            AnyEndpoint::Cluster(e) => &e.spec.connection,
        }
    }

    /// Connection settings, to change (e.g. the one-shot mode's URL override).
    pub fn connection_mut(&mut self) -> &mut EndpointConnection {
        match self {
            AnyEndpoint::Namespaced(e) => &mut e.spec.connection,
            AnyEndpoint::Cluster(e) => &mut e.spec.connection,
        }
    }

    /// `Kind/namespace/name` (cluster endpoints: `Kind/name`): how metrics and logs name it.
    pub fn key(&self) -> String {
        use kube::ResourceExt;
        match self {
            AnyEndpoint::Namespaced(e) => format!(
                "InvitationEndpoint/{}/{}",
                e.namespace().unwrap_or_default(),
                e.name_any()
            ),
            AnyEndpoint::Cluster(e) => format!("ClusterInvitationEndpoint/{}", e.name_any()),
        }
    }

    /// The endpoint as a status records it: flavour, kind, name and uid.
    pub fn binding(&self) -> crate::api::EndpointBinding {
        use kube::ResourceExt;
        let (kind, name, uid) = match self {
            AnyEndpoint::Namespaced(e) => (
                crate::api::EndpointKind::InvitationEndpoint,
                e.name_any(),
                e.uid(),
            ),
            AnyEndpoint::Cluster(e) => (
                crate::api::EndpointKind::ClusterInvitationEndpoint,
                e.name_any(),
                e.uid(),
            ),
        };
        crate::api::EndpointBinding {
            api: self.connection().api,
            kind,
            name,
            uid,
        }
    }

    /// Whether the endpoint is namespaced (the team's own token).
    pub fn is_namespaced(&self) -> bool {
        matches!(self, AnyEndpoint::Namespaced(_))
    }

    /// The grants a cluster endpoint restricts invitations to: its `allowed`, or plain
    /// membership ([`MEMBERSHIP_ONLY`]) when it has none. `None`: unrestricted (a namespaced
    /// endpoint carries the team's own token).
    pub fn allowed(&self) -> Option<&AllowedGrants> {
        match self {
            AnyEndpoint::Namespaced(_) => None,
            AnyEndpoint::Cluster(e) => Some(e.spec.allowed.as_ref().unwrap_or(&MEMBERSHIP_ONLY)),
        }
    }

    /// Whether accessPolicy Enforce and deletionPolicy Delete may adopt users that existed
    /// before: always on a namespaced endpoint, opt-in on a cluster endpoint.
    pub fn allows_adoption(&self) -> bool {
        match self {
            AnyEndpoint::Namespaced(_) => true,
            AnyEndpoint::Cluster(e) => e
                .spec
                .allowed
                .as_ref()
                .is_some_and(|a| a.adopt_existing_users),
        }
    }
}
