//! One-shot mode: `invite-operator reconcile -f FILE…` runs the planner and the API clients
//! once over manifests read from files, with no cluster, and prints the resources with their
//! resulting status.

use std::{collections::BTreeMap, sync::Mutex, time::Duration};

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::ResourceExt;
use serde::Deserialize;

use crate::{
    api::{
        AnyEndpoint, ClusterInvitationEndpoint, EndpointKind, InvitationEndpoint, UserInvitation,
        UserInvitationStatus,
    },
    invite::{
        ApiToken, ConnectError, InviteApi, SharedApi,
        client::{ClientSettings, build_client},
    },
    reconcile::{
        self, StatusWriter, SyncReport, WriteError,
        pass::{self, Outcome},
        plan::{self, PlanContext},
        resolve::{EndpointPolicy, Resolved, Rules, SecretLocation, Source},
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
#[derive(Clone, Debug)]
pub struct OneShotOptions {
    /// Plan and print, without inviting anyone.
    pub dry_run: bool,
    /// Namespace of ClusterInvitationEndpoint Secrets without one.
    pub operator_namespace: String,
    /// Replace every endpoint's URL (e.g. by the embedded mock's).
    pub url_override: Option<String>,
    /// Replace every endpoint's token (e.g. by the embedded mock's).
    pub token_override: Option<String>,
    /// What endpoints may reach, as the controller's flags say. One shot runs on the machine of
    /// the person running it, against the files they give: by default loopback (the embedded
    /// mock) is allowed for namespaced endpoints too.
    pub endpoint_policy: EndpointPolicy,
}

impl Default for OneShotOptions {
    fn default() -> Self {
        OneShotOptions {
            dry_run: false,
            operator_namespace: String::new(),
            url_override: None,
            token_override: None,
            endpoint_policy: EndpointPolicy {
                namespaced_loopback_http: true,
                ..EndpointPolicy::default()
            },
        }
    }
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

/// The manifests as a [`Source`]: endpoints, namespaces and Secrets from the files, with the
/// overrides of the options.
struct Manifest<'a> {
    manifests: &'a Manifests,
    options: &'a OneShotOptions,
}

impl Source for Manifest<'_> {
    type Error = std::convert::Infallible;

    fn endpoint(&self, invitation: &UserInvitation) -> Option<AnyEndpoint> {
        let namespace = invitation.namespace().unwrap_or_default();
        let r = &invitation.spec.endpoint_ref;
        let manifests = self.manifests;
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
        if let (Some(endpoint), Some(url)) = (endpoint.as_mut(), &self.options.url_override) {
            endpoint.connection_mut().url = url.clone();
        }
        endpoint
    }

    async fn namespace_labels(
        &self,
        namespace: &str,
    ) -> Result<BTreeMap<String, String>, Self::Error> {
        Ok(self
            .manifests
            .namespaces
            .iter()
            .find(|n| n.name_any() == namespace)
            .map(|n| n.labels().clone())
            .unwrap_or_default())
    }

    async fn secret(&self, location: &SecretLocation) -> Result<Option<Secret>, Self::Error> {
        if let Some(token) = &self.options.token_override {
            let secret = Secret {
                string_data: Some(BTreeMap::from([(location.key.clone(), token.clone())])),
                ..Secret::default()
            };
            return Ok(Some(secret));
        }
        Ok(self
            .manifests
            .secrets
            .iter()
            .find(|s| {
                s.name_any() == location.name
                    && s.namespace().as_deref() == Some(location.namespace.as_str())
            })
            .cloned())
    }

    fn client(&self, endpoint: &AnyEndpoint, token: ApiToken) -> Result<SharedApi, ConnectError> {
        let settings = ClientSettings {
            recorder: ApiCallRecorder::default(),
            read_attempts: 3,
            limits: Default::default(),
            batch: Default::default(),
            may_act: std::sync::Arc::new(|| true),
        };
        build_client(endpoint, token, &settings)
    }
}

/// The one-shot side of a pass: every invited user is checked, nobody else holds anyone,
/// and a dry run only plans.
struct OneShot<'a> {
    source: Manifest<'a>,
    id: &'a str,
    /// Lines of the plan (dry run) or of problems met.
    lines: Mutex<Vec<String>>,
}

impl<'a> pass::Driver for OneShot<'a> {
    type Source = Manifest<'a>;
    type Writer = MemoryStatus<'a>;
    type Error = WriteError;

    fn source(&self) -> &Manifest<'a> {
        &self.source
    }

    fn rules(&self) -> Rules<'_> {
        // Secrets need no label: there is no tenant to keep from the operator's own pod.
        Rules {
            policy: &self.source.options.endpoint_policy,
            operator_namespace: &self.source.options.operator_namespace,
            require_credentials_label: false,
        }
    }

    fn check_invited(&self) -> bool {
        true
    }

    fn max_clock_skew(&self) -> Duration {
        Duration::ZERO
    }

    async fn sync(
        &self,
        resolved: &Resolved,
        ctx: &mut PlanContext<'_>,
        writer: &mut MemoryStatus<'a>,
    ) -> Result<SyncReport, WriteError> {
        if self.source.options.dry_run {
            let lines = dry_run(resolved.api.as_ref(), ctx, self.id).await;
            self.lines.lock().expect("lock").extend(lines);
            return Ok(SyncReport::default());
        }
        reconcile::sync(
            resolved.api.as_ref(),
            ctx,
            &reconcile::NoOtherHolders,
            writer,
        )
        .await
    }
}

/// One resource: its next status (unchanged in a dry run, unless it is blocked).
async fn one(
    manifests: &Manifests,
    invitation: &UserInvitation,
    options: &OneShotOptions,
    id: &str,
    lines: &mut Vec<String>,
) -> UserInvitationStatus {
    let mut status = invitation.status.clone().unwrap_or_default();
    let driver = OneShot {
        source: Manifest { manifests, options },
        id,
        lines: Mutex::new(Vec::new()),
    };
    let mut writer = MemoryStatus {
        status: &mut status,
    };
    let outcome = pass::run(&driver, invitation, &mut writer).await;
    let planned = driver.lines.into_inner().expect("lock");
    match outcome {
        Ok(Outcome::Stopped(stopped)) => lines.push(format!(
            "{id}: blocked ({}): {}",
            stopped.blocked.reason.as_str(),
            stopped.blocked.message
        )),
        Ok(Outcome::Synced(synced)) => {
            if let Some((dropped, entries)) = &synced.started_over {
                lines.push(format!(
                    "{id}: {entries} users were invited or adopted through {dropped}; ownership there is dropped and the users are looked up on {}",
                    synced.resolved.endpoint.binding()
                ));
            }
            lines.extend(planned);
            lines.extend(synced.report.problem.map(|p| format!("{id}: {p}")));
        }
        Ok(Outcome::NotServed) => {}
        Err(error) => lines.push(format!("{id}: {error}")),
    }
    status
}

async fn dry_run(api: &dyn InviteApi, ctx: &PlanContext<'_>, id: &str) -> Vec<String> {
    let to_look_up = plan::addresses_to_look_up(ctx);
    let observed = match api.look_up(&to_look_up).await {
        Ok(o) => o,
        Err(e) => return vec![format!("{id}: cannot look users up: {e}")],
    };
    let decided = plan::decide(ctx, &observed);
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
            ..Default::default()
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

    /// The namespaced endpoint of [`MANIFESTS`] (plain http to loopback) under `policy`: the
    /// Ready reason and message of the resource that is not paused.
    async fn working_under(policy: EndpointPolicy) -> (String, String) {
        let mut manifests = Manifests::default();
        parse_manifests(MANIFESTS, "test", "default", &mut manifests).unwrap();
        let options = OneShotOptions {
            operator_namespace: "invite-operator".into(),
            endpoint_policy: policy,
            ..Default::default()
        };
        let result = run(manifests, &options).await;
        let invitation = result
            .invitations
            .iter()
            .find(|i| i.name_any() == "working")
            .unwrap();
        let status = invitation.status.as_ref().unwrap();
        let ready = status.conditions.iter().find(|c| c.type_ == plan::READY);
        let ready = ready.unwrap();
        (ready.reason.clone(), ready.message.clone())
    }

    #[tokio::test]
    async fn the_endpoint_policy_of_the_options_is_honoured() {
        // Allowed (the default of the one-shot mode): the API is called, and unreachable.
        let (allowed, _) = working_under(OneShotOptions::default().endpoint_policy).await;
        assert_ne!(allowed, "NotAllowed");
        // Plain http to loopback refused for namespaced endpoints, as `run` refuses it.
        let (reason, message) = working_under(EndpointPolicy::default()).await;
        assert_eq!(reason, "NotAllowed", "{message}");
        // Namespaced endpoints turned off.
        let off = EndpointPolicy {
            namespaced_endpoints: false,
            namespaced_loopback_http: true,
            ..EndpointPolicy::default()
        };
        let (reason, message) = working_under(off).await;
        assert_eq!(reason, "NotAllowed", "{message}");
    }
}
