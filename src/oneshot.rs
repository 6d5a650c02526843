//! One-shot mode: `invite-operator reconcile -f FILE…` runs the planner and the API clients
//! once over manifests read from files, with no cluster, and prints the resources with their
//! resulting status.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::ResourceExt;
use serde::Deserialize;

use crate::{
    api::{
        AnyEndpoint, ClusterInvitationEndpoint, EndpointKind, InvitationEndpoint,
        PAUSED_ANNOTATION, UserInvitation, UserInvitationStatus,
    },
    controller::{ClientSettings, build_client},
    invite::{ApiToken, InviteApi, SharedApi},
    reconcile::{
        self, StatusWriter, WriteError,
        plan::{self, Blocked, EndpointFacts, PlanContext},
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

/// A manifest that cannot be parsed.
#[derive(thiserror::Error, Debug)]
#[error("{location}: {message}")]
pub struct ManifestError {
    /// The file and document.
    pub location: String,
    /// What is wrong.
    pub message: String,
}

/// Parses multi-document YAML (or JSON) manifests. Documents of other kinds are skipped with
/// a warning; a document that does not parse is an error naming it.
pub fn parse_manifests(
    text: &str,
    source: &str,
    default_namespace: &str,
    into: &mut Manifests,
) -> Result<(), ManifestError> {
    let documents: Vec<serde_json::Value> =
        serde_saphyr::from_multiple(text).map_err(|e| ManifestError {
            location: source.to_string(),
            message: e.to_string(),
        })?;
    for (index, value) in documents.into_iter().enumerate() {
        if value.is_null() {
            continue;
        }
        let location = format!("{source}: document {}", index + 1);
        add_document(value, &location, default_namespace, into)
            .map_err(|message| ManifestError { location, message })?;
    }
    Ok(())
}

fn add_document(
    value: serde_json::Value,
    location: &str,
    default_namespace: &str,
    into: &mut Manifests,
) -> Result<(), String> {
    let meta: TypeMeta = serde_json::from_value(value.clone()).map_err(|e| e.to_string())?;
    let parse_err = |e: serde_json::Error| format!("{}: {e}", meta.kind);
    let default_ns = |ns: &mut Option<String>| {
        ns.get_or_insert_with(|| default_namespace.to_string());
    };
    let group = meta.api_version.split('/').next().unwrap_or_default();
    match (group, meta.kind.as_str()) {
        (crate::api::GROUP, "UserInvitation") => {
            let mut inv: UserInvitation = serde_json::from_value(value).map_err(parse_err)?;
            default_ns(&mut inv.metadata.namespace);
            inv.metadata.generation.get_or_insert(1);
            into.invitations.push(inv);
        }
        (crate::api::GROUP, "InvitationEndpoint") => {
            let mut ep: InvitationEndpoint = serde_json::from_value(value).map_err(parse_err)?;
            default_ns(&mut ep.metadata.namespace);
            into.endpoints.push(ep);
        }
        (crate::api::GROUP, "ClusterInvitationEndpoint") => into
            .cluster_endpoints
            .push(serde_json::from_value(value).map_err(parse_err)?),
        ("v1", "Secret") => {
            let mut secret: Secret = serde_json::from_value(value).map_err(parse_err)?;
            default_ns(&mut secret.metadata.namespace);
            into.secrets.push(secret);
        }
        ("v1", "Namespace") => into
            .namespaces
            .push(serde_json::from_value(value).map_err(parse_err)?),
        _ => eprintln!(
            "{location} ({}): skipped (not a resource of invite-operator)",
            meta.kind
        ),
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
        let id = format!(
            "UserInvitation {}/{}",
            invitation.namespace().unwrap_or_default(),
            invitation.name_any()
        );
        let status = one(&manifests, invitation, options, &id, &mut plan_lines).await;
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

/// One resource: its next status (unchanged in a dry run).
async fn one(
    manifests: &Manifests,
    invitation: &UserInvitation,
    options: &OneShotOptions,
    id: &str,
    lines: &mut Vec<String>,
) -> UserInvitationStatus {
    let previous = invitation.status.clone().unwrap_or_default();
    let generation = invitation.metadata.generation.unwrap_or(1);
    let blocked = |requested: &plan::Requested, blocked: Blocked, lines: &mut Vec<String>| {
        lines.push(format!(
            "{id}: blocked ({}): {}",
            blocked.reason.as_str(),
            blocked.message
        ));
        plan::blocked_status(
            requested,
            &invitation.spec,
            &previous,
            generation,
            plan::now(),
            &blocked,
        )
    };
    let requested = match plan::requested_addresses(&invitation.spec) {
        Ok(requested) => requested,
        Err(b) => return blocked(&plan::Requested::default(), b, lines),
    };
    if invitation.is_paused() {
        let message =
            format!("paused by the {PAUSED_ANNOTATION} annotation; no API calls are made");
        return blocked(
            &requested,
            Blocked::new(plan::ReadyReason::Paused, message),
            lines,
        );
    }
    let (endpoint, api, identity) = match prepare(manifests, invitation, &requested, options) {
        Ok(prepared) => prepared,
        Err(b) => return blocked(&requested, b, lines),
    };
    let facts = EndpointFacts::of(&endpoint, api.as_ref(), identity, std::time::Duration::ZERO);
    let binding = plan::bind_to_endpoint(&previous, &facts.api, &facts.endpoint, plan::now());
    let bound = match &binding {
        plan::Binding::Settling { until, previous } => {
            let message = format!(
                "the resource now uses {} ({}); an invite request sent through {previous} may still act until {until}",
                facts.endpoint, facts.api
            );
            return blocked(
                &requested,
                Blocked::new(plan::ReadyReason::Pending, message),
                lines,
            );
        }
        plan::Binding::StartOver {
            dropped, entries, ..
        } => {
            lines.push(format!(
                "{id}: {entries} users were invited or adopted through {dropped}; ownership there is dropped and the users are looked up on {}",
                facts.endpoint
            ));
            binding
                .status()
                .expect("a status to plan from")
                .into_owned()
        }
        plan::Binding::Same(_) => previous.clone(),
    };
    let ctx = PlanContext::new(
        &requested,
        &invitation.spec,
        &bound,
        generation,
        true,
        facts,
    );
    if options.dry_run {
        lines.extend(dry_run(api.as_ref(), &ctx, id).await);
        return previous;
    }
    let mut status = previous.clone();
    let mut writer = MemoryStatus {
        status: &mut status,
    };
    match reconcile::sync(api.as_ref(), &ctx, &reconcile::NoOtherHolders, &mut writer).await {
        Ok(report) => lines.extend(report.problem.map(|p| format!("{id}: {p}"))),
        Err(error) => lines.push(format!("{id}: {error}")),
    }
    status
}

/// The endpoint of a resource (checked as the controller checks it), its client and its API.
fn prepare(
    manifests: &Manifests,
    invitation: &UserInvitation,
    requested: &plan::Requested,
    options: &OneShotOptions,
) -> Result<(AnyEndpoint, SharedApi, crate::api::ApiIdentity), Blocked> {
    let namespace = invitation.namespace().unwrap_or_default();
    let r = &invitation.spec.endpoint_ref;
    let mut endpoint = match r.kind {
        EndpointKind::InvitationEndpoint => manifests
            .endpoints
            .iter()
            .find(|e| {
                e.name_any() == r.name && e.namespace().as_deref() == Some(namespace.as_str())
            })
            .map(|e| AnyEndpoint::Namespaced(Box::new(e.clone()))),
        EndpointKind::ClusterInvitationEndpoint => manifests
            .cluster_endpoints
            .iter()
            .find(|e| e.name_any() == r.name)
            .map(|e| AnyEndpoint::Cluster(Box::new(e.clone()))),
    };
    if let (Some(endpoint), Some(url)) = (endpoint.as_mut(), &options.url_override) {
        endpoint.connection_mut().url = url.clone();
    }
    let labels: BTreeMap<String, String> = manifests
        .namespaces
        .iter()
        .find(|n| n.name_any() == namespace)
        .map(|n| n.labels().clone())
        .unwrap_or_default();
    // One shot runs on the machine of the person running it, against the files they give:
    // there is no tenant to keep from the operator's own pod, so loopback (the embedded mock)
    // is allowed for namespaced endpoints too, and Secrets need no label.
    let policy = resolve::EndpointPolicy {
        namespaced_loopback_http: true,
        ..resolve::EndpointPolicy::default()
    };
    let check = resolve::CheckContext {
        namespace_labels: &labels,
        requested_users: requested.addresses.len(),
        policy: &policy,
    };
    resolve::check_endpoint(invitation, endpoint.as_ref(), check)?;
    let endpoint = endpoint.expect("checked");
    let token = match &options.token_override {
        Some(token) => ApiToken::new(token),
        None => {
            let location = resolve::secret_location(&endpoint, &options.operator_namespace);
            let secret = manifests.secrets.iter().find(|s| {
                s.name_any() == location.name
                    && s.namespace().as_deref() == Some(location.namespace.as_str())
            });
            resolve::read_token(secret, &location)?
        }
    };
    let settings = ClientSettings {
        recorder: ApiCallRecorder::default(),
        read_attempts: 3,
        limits: Default::default(),
        batch: Default::default(),
        may_act: std::sync::Arc::new(|| true),
    };
    let not_ready = |m: String| Blocked::new(plan::ReadyReason::EndpointNotReady, m);
    let api = build_client(&endpoint, token, &settings).map_err(|e| not_ready(e.to_string()))?;
    let identity =
        crate::invite::api_identity(endpoint.connection()).map_err(|e| not_ready(e.to_string()))?;
    Ok((endpoint, api, identity))
}

async fn dry_run(api: &dyn InviteApi, ctx: &PlanContext<'_>, id: &str) -> Vec<String> {
    let to_observe = plan::addresses_to_observe(ctx);
    let observed = match api.observe(&to_observe).await {
        Ok(o) => o,
        Err(e) => return vec![format!("{id}: cannot look users up: {e}")],
    };
    let decided = plan::plan(ctx, &observed);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Two resources on one endpoint whose API refuses every connection; one is paused.
    const MANIFESTS: &str = r#"
apiVersion: invite.operators.dev/v1alpha1
kind: InvitationEndpoint
metadata: {name: api, namespace: team}
spec:
  api: UserInvite
  url: http://127.0.0.1:1
  credentials: {secretRef: {name: token}}
---
apiVersion: v1
kind: Secret
metadata: {name: token, namespace: team}
stringData: {token: t}
---
apiVersion: invite.operators.dev/v1alpha1
kind: UserInvitation
metadata:
  name: paused
  namespace: team
  annotations: {invite.operators.dev/paused: "true"}
spec:
  endpointRef: {kind: InvitationEndpoint, name: api}
  users: [{emailAddress: a@example.com}]
---
apiVersion: invite.operators.dev/v1alpha1
kind: UserInvitation
metadata: {name: working, namespace: team}
spec:
  endpointRef: {kind: InvitationEndpoint, name: api}
  users: [{emailAddress: b@example.com}]
"#;

    #[tokio::test]
    async fn a_paused_resource_is_left_paused_without_any_call() {
        let mut manifests = Manifests::default();
        parse_manifests(MANIFESTS, "test", "default", &mut manifests).unwrap();
        let options = OneShotOptions {
            dry_run: false,
            operator_namespace: "invite-operator".into(),
            url_override: None,
            token_override: None,
        };
        let result = run(manifests, &options).await;
        let reason = |name: &str| {
            let invitation = result
                .invitations
                .iter()
                .find(|i| i.name_any() == name)
                .unwrap();
            let status = invitation.status.as_ref().unwrap();
            let ready = status.conditions.iter().find(|c| c.type_ == plan::READY);
            (ready.unwrap().reason.clone(), status.users.clone())
        };
        let (paused, users) = reason("paused");
        assert_eq!(paused, "Paused");
        assert!(
            users
                .iter()
                .all(|u| u.state == crate::api::UserState::Pending),
            "{users:?}"
        );
        // The other one did try the API (and failed to reach it): the pause is what kept the
        // first from calling.
        let (working, _) = reason("working");
        assert_ne!(working, "Paused");
        assert!(!result.all_ready);
        assert!(
            result
                .plan
                .iter()
                .any(|line| line.contains("team/paused: blocked (Paused)")),
            "{:?}",
            result.plan
        );
    }
}
