//! One-shot mode: `invite-operator reconcile -f FILE…` runs the planner and the API clients
//! once over manifests read from files, with no cluster, and prints the resources with their
//! resulting status.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::ResourceExt;
use serde::Deserialize;

use crate::{
    api::{
        AnyEndpoint, ClusterInvitationEndpoint, EndpointKind, InvitationEndpoint, UserInvitation,
        UserInvitationStatus,
    },
    controller::build_client,
    invite::{ApiToken, InviteApi},
    reconcile::{
        self, StatusWriter, SyncInput, WriteError,
        plan::{self, Blocked, PlanContext},
        resolve,
    },
    telemetry::ApiCallRecorder,
};

/// The objects read from the manifests.
#[derive(Default, Debug)]
pub struct Manifests {
    /// UserInvitations, in file order.
    pub invitations: Vec<UserInvitation>,
    /// Namespaced endpoints.
    pub endpoints: Vec<InvitationEndpoint>,
    /// Cluster endpoints.
    pub cluster_endpoints: Vec<ClusterInvitationEndpoint>,
    /// Secrets holding tokens.
    pub secrets: Vec<Secret>,
    /// Namespaces (for namespaceSelector checks).
    pub namespaces: Vec<Namespace>,
}

#[derive(Deserialize)]
struct TypeMeta {
    #[serde(rename = "apiVersion", default)]
    api_version: String,
    #[serde(default)]
    kind: String,
}

/// Parses multi-document YAML (or JSON) manifests. Documents of other kinds are skipped with
/// a warning; a document that does not parse is an error naming it.
pub fn parse_manifests(
    text: &str,
    source: &str,
    default_namespace: &str,
    into: &mut Manifests,
) -> Result<(), String> {
    for (index, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let value = serde_yaml::Value::deserialize(document)
            .map_err(|e| format!("{source}: document {}: {e}", index + 1))?;
        if value.is_null() {
            continue;
        }
        let meta: TypeMeta = serde_yaml::from_value(value.clone())
            .map_err(|e| format!("{source}: document {}: {e}", index + 1))?;
        let what = format!("{source}: document {} ({})", index + 1, meta.kind);
        let parse_err = |e: serde_yaml::Error| format!("{what}: {e}");
        let group = meta.api_version.split('/').next().unwrap_or_default();
        match (group, meta.kind.as_str()) {
            (crate::api::GROUP, "UserInvitation") => {
                let mut inv: UserInvitation = serde_yaml::from_value(value).map_err(parse_err)?;
                inv.metadata
                    .namespace
                    .get_or_insert_with(|| default_namespace.to_string());
                inv.metadata.generation.get_or_insert(1);
                into.invitations.push(inv);
            }
            (crate::api::GROUP, "InvitationEndpoint") => {
                let mut ep: InvitationEndpoint =
                    serde_yaml::from_value(value).map_err(parse_err)?;
                ep.metadata
                    .namespace
                    .get_or_insert_with(|| default_namespace.to_string());
                into.endpoints.push(ep);
            }
            (crate::api::GROUP, "ClusterInvitationEndpoint") => {
                into.cluster_endpoints
                    .push(serde_yaml::from_value(value).map_err(parse_err)?);
            }
            ("v1", "Secret") => {
                let mut secret: Secret = serde_yaml::from_value(value).map_err(parse_err)?;
                secret
                    .metadata
                    .namespace
                    .get_or_insert_with(|| default_namespace.to_string());
                into.secrets.push(secret);
            }
            ("v1", "Namespace") => into
                .namespaces
                .push(serde_yaml::from_value(value).map_err(parse_err)?),
            _ => eprintln!("{what}: skipped (not a resource of invite-operator)"),
        }
    }
    Ok(())
}

/// Options of a one-shot run.
#[derive(Clone, Debug, Default)]
pub struct OneShotOptions {
    /// Plan and print, without inviting anyone.
    pub dry_run: bool,
    /// Namespace of ClusterInvitationEndpoint Secrets without one.
    pub operator_namespace: String,
    /// Replace every endpoint's URL (e.g. by the embedded mock's).
    pub url_override: Option<String>,
    /// Replace every endpoint's token (e.g. by the embedded mock's).
    pub token_override: Option<String>,
}

/// Holds the status of one resource in memory.
struct MemoryStatus<'a> {
    status: &'a mut UserInvitationStatus,
}

impl StatusWriter for MemoryStatus<'_> {
    async fn write(&mut self, status: &UserInvitationStatus) -> Result<(), WriteError> {
        *self.status = status.clone();
        Ok(())
    }
}

/// What a one-shot run produced.
pub struct OneShotResult {
    /// The resources with their new status.
    pub invitations: Vec<UserInvitation>,
    /// For `--dry-run`: one line per planned action.
    pub plan: Vec<String>,
    /// Whether every resource ended Ready.
    pub all_ready: bool,
}

/// Runs the reconciler once over the manifests.
pub async fn run(manifests: Manifests, options: &OneShotOptions) -> OneShotResult {
    let mut invitations = manifests.invitations.clone();
    let mut plan_lines = Vec::new();
    for invitation in &mut invitations {
        let mut status = invitation.status.clone().unwrap_or_default();
        let id = format!(
            "UserInvitation {}/{}",
            invitation.namespace().unwrap_or_default(),
            invitation.name_any()
        );
        match prepare(&manifests, invitation, options) {
            Err((requested, blocked)) => {
                plan_lines.push(format!(
                    "{id}: blocked ({}): {}",
                    blocked.reason.as_str(),
                    blocked.message
                ));
                status = plan::blocked_status(
                    &requested,
                    &status,
                    invitation.metadata.generation.unwrap_or(1),
                    reconcile::now(),
                    &blocked,
                );
            }
            Ok((requested, api)) => {
                let generation = invitation.metadata.generation.unwrap_or(1);
                if options.dry_run {
                    plan_lines.extend(
                        dry_run(&api, invitation, &requested, &status, generation, &id).await,
                    );
                    continue;
                }
                let previous = status.clone();
                let input = SyncInput {
                    spec: &invitation.spec,
                    requested: &requested,
                    previous: &previous,
                    generation,
                    check_invited: true,
                    settle_time: api.request_timeout(),
                };
                let mut writer = MemoryStatus {
                    status: &mut status,
                };
                if let Err(error) = reconcile::sync_users(&api, input, &mut writer).await {
                    plan_lines.push(format!("{id}: {error}"));
                }
            }
        }
        invitation.status = Some(status);
    }
    let all_ready = invitations.iter().all(|inv| {
        inv.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == plan::READY && c.status == "True")
        })
    });
    OneShotResult {
        invitations,
        plan: plan_lines,
        all_ready,
    }
}

type Prepared = (Vec<String>, crate::invite::InviteClient);

fn prepare(
    manifests: &Manifests,
    invitation: &UserInvitation,
    options: &OneShotOptions,
) -> Result<Prepared, (Vec<String>, Blocked)> {
    let requested = plan::requested_addresses(&invitation.spec).map_err(|b| (Vec::new(), b))?;
    let fail = |b: Blocked| (requested.clone(), b);
    let namespace = invitation.namespace().unwrap_or_default();
    let r = &invitation.spec.endpoint_ref;
    let mut endpoint = match r.kind {
        EndpointKind::InvitationEndpoint => manifests
            .endpoints
            .iter()
            .find(|e| {
                e.name_any() == r.name && e.namespace().as_deref() == Some(namespace.as_str())
            })
            .map(|e| AnyEndpoint::Namespaced(e.clone())),
        EndpointKind::ClusterInvitationEndpoint => manifests
            .cluster_endpoints
            .iter()
            .find(|e| e.name_any() == r.name)
            .map(|e| AnyEndpoint::Cluster(e.clone())),
    };
    let labels: BTreeMap<String, String> = manifests
        .namespaces
        .iter()
        .find(|n| n.name_any() == namespace)
        .map(|n| n.labels().clone())
        .unwrap_or_default();
    resolve::check_endpoint(invitation, endpoint.as_ref(), &labels, requested.len())
        .map_err(fail)?;
    let endpoint_ref = endpoint.as_mut().expect("checked");
    if let Some(url) = &options.url_override {
        match endpoint_ref {
            AnyEndpoint::Namespaced(e) => e.spec.connection.url = url.clone(),
            AnyEndpoint::Cluster(e) => e.spec.connection.url = url.clone(),
        }
    }
    let endpoint = endpoint.expect("checked");
    let token = match &options.token_override {
        Some(token) => ApiToken::new(token),
        None => {
            let location = resolve::secret_location(&endpoint, &options.operator_namespace);
            let secret = manifests.secrets.iter().find(|s| {
                s.name_any() == location.name
                    && s.namespace().as_deref() == Some(location.namespace.as_str())
            });
            resolve::read_token(secret, &location).map_err(fail)?
        }
    };
    let name = resolve::endpoint_display(invitation);
    let api = build_client(&endpoint, token, &name, ApiCallRecorder::default(), 3)
        .map_err(|m| fail(Blocked::new(plan::ReadyReason::EndpointNotReady, m)))?;
    Ok((requested, api))
}

async fn dry_run(
    api: &crate::invite::InviteClient,
    invitation: &UserInvitation,
    requested: &[String],
    status: &UserInvitationStatus,
    generation: i64,
    id: &str,
) -> Vec<String> {
    let ctx = PlanContext {
        requested,
        previous: status,
        generation,
        now: reconcile::now(),
        reinvite_expired: invitation.spec.reinvite_expired,
        check_invited: true,
        invitation_lifetime: api.invitation_lifetime(),
        enforce: invitation.spec.access_policy == crate::api::AccessPolicy::Enforce,
        settle_time: chrono::Duration::from_std(api.request_timeout())
            .unwrap_or(chrono::Duration::MAX),
    };
    let to_observe = plan::addresses_to_observe(&ctx);
    let observed = match api.observe(&to_observe).await {
        Ok(o) => o,
        Err(e) => return vec![format!("{id}: cannot look users up: {e}")],
    };
    let decided = plan::plan(&ctx, &observed);
    let mut lines = Vec::new();
    if decided.to_invite.is_empty() {
        lines.push(format!("{id}: nothing to invite"));
    } else {
        lines.push(format!(
            "{id}: would invite {} in one call: {}",
            decided.to_invite.len(),
            decided.to_invite.join(", ")
        ));
    }
    for user in decided
        .users
        .iter()
        .filter(|u| !decided.to_invite.contains(&u.email_address))
    {
        lines.push(format!("{id}: {} is {}", user.email_address, user.state));
    }
    lines
}
