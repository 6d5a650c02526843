//! The `Ready` condition of InvitationEndpoints and ClusterInvitationEndpoints: the token
//! Secret resolves, the settings build a client, and (OrgInvitation) the token exchange works.
//! Checked on changes of the endpoint or its Secret and on every resync; written only when it
//! changes.

use std::{sync::Arc, time::Duration};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{Patch, PatchParams},
    core::PartialObjectMeta,
    runtime::{Controller, WatchStreamExt, controller::Action, reflector::ObjectRef, watcher},
};
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::{
    api::{AnyEndpoint, ClusterInvitationEndpoint, EndpointStatus, InvitationEndpoint},
    reconcile::{self, plan, resolve},
};

/// What a check found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointCheck {
    /// Whether the endpoint can be used.
    pub ready: bool,
    /// Condition reason.
    pub reason: &'static str,
    /// Human sentence, never containing the token.
    pub message: String,
}

/// The next status of an endpoint: the Ready condition, its transition time kept while the
/// status of the condition does not change.
pub fn next_status(
    previous: &EndpointStatus,
    generation: i64,
    check: &EndpointCheck,
) -> EndpointStatus {
    let status = if check.ready { "True" } else { "False" };
    let last_transition_time = previous
        .conditions
        .iter()
        .find(|c| c.type_ == plan::READY && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| plan::to_time(reconcile::now()));
    EndpointStatus {
        conditions: vec![k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
            type_: plan::READY.to_string(),
            status: status.to_string(),
            reason: check.reason.to_string(),
            message: check.message.clone(),
            observed_generation: Some(generation),
            last_transition_time,
        }],
        observed_generation: Some(generation),
    }
}

/// Builds (or reuses) the API client of an endpoint from its settings and token.
pub type ClientFactory = Box<
    dyn Fn(
            &AnyEndpoint,
            &resolve::SecretLocation,
            crate::invite::ApiToken,
        ) -> Result<crate::invite::InviteClient, String>
        + Send
        + Sync,
>;

/// Shared state of the endpoint status controllers.
pub struct EndpointContext {
    /// Kubernetes client.
    pub client: Client,
    /// Namespace of ClusterInvitationEndpoint Secrets that name none.
    pub operator_namespace: String,
    /// Label selector of the ClusterInvitationEndpoints served; `None` means all.
    pub cluster_endpoint_selector: Option<String>,
    /// How often a Ready endpoint is checked again.
    pub resync_interval: Duration,
    /// Builds (or reuses) the API client of an endpoint.
    pub client_for: ClientFactory,
}

/// Checks one endpoint.
pub async fn check(
    ctx: &EndpointContext,
    endpoint: &AnyEndpoint,
) -> Result<EndpointCheck, kube::Error> {
    let location = resolve::secret_location(endpoint, &ctx.operator_namespace);
    let secret = Api::<Secret>::namespaced(ctx.client.clone(), &location.namespace)
        .get_opt(&location.name)
        .await?;
    let token = match resolve::read_token(secret.as_ref(), &location) {
        Ok(token) => token,
        Err(blocked) => {
            return Ok(EndpointCheck {
                ready: false,
                reason: "CredentialsNotFound",
                message: blocked.message,
            });
        }
    };
    let api = match (ctx.client_for)(endpoint, &location, token) {
        Ok(api) => api,
        Err(message) => {
            return Ok(EndpointCheck {
                ready: false,
                reason: "InvalidConfiguration",
                message,
            });
        }
    };
    Ok(match api.verify_credentials().await {
        Ok(()) => EndpointCheck {
            ready: true,
            reason: "CredentialsResolved",
            message: format!(
                "the token is read from Secret {}/{} key {:?}",
                location.namespace, location.name, location.key
            ),
        },
        Err(error) => EndpointCheck {
            ready: false,
            reason: match error.category() {
                crate::invite::ErrorCategory::Transient => "Unreachable",
                _ => "CredentialsRejected",
            },
            message: error.to_string(),
        },
    })
}

/// Writes `status` if it differs from the object's, guarded by its resourceVersion.
async fn write_status<K>(
    api: &Api<K>,
    object: &K,
    previous: &EndpointStatus,
    status: &EndpointStatus,
) -> Result<(), kube::Error>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    if previous == status {
        return Ok(());
    }
    let patch: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/metadata/resourceVersion", "value": object.resource_version()},
        {"op": "add", "path": "/status", "value": status},
    ]))
    .expect("a valid JSON patch");
    api.patch_status(
        &object.name_any(),
        &PatchParams::default(),
        &Patch::<()>::Json(patch),
    )
    .await
    .map(|_| ())
}

/// An error of the endpoint status controller (only Kubernetes calls can fail it).
#[derive(thiserror::Error, Debug)]
#[error("Kubernetes API: {0}")]
pub struct EndpointStatusError(#[from] kube::Error);

/// Checks one endpoint and writes its status if it changed.
async fn reconcile_endpoint<K>(
    object: &K,
    any: AnyEndpoint,
    previous: Option<EndpointStatus>,
    api: Api<K>,
    ctx: &EndpointContext,
) -> Result<Action, EndpointStatusError>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let result = check(ctx, &any).await?;
    let previous = previous.unwrap_or_default();
    let next = next_status(&previous, object.meta().generation.unwrap_or(0), &result);
    match write_status(&api, object, &previous, &next).await {
        Ok(()) => Ok(Action::requeue(ctx.resync_interval)),
        // The endpoint changed since it was read: the watch brings its new version, which is
        // checked from scratch (the requeue is a fallback). Not an error.
        Err(error) if crate::controller::is_guard_failure(&error) => {
            tracing::debug!(%error, "endpoint status: the endpoint changed meanwhile");
            Ok(Action::requeue(Duration::from_secs(1)))
        }
        Err(error) => Err(error.into()),
    }
}

async fn reconcile_namespaced(
    endpoint: Arc<InvitationEndpoint>,
    ctx: Arc<EndpointContext>,
) -> Result<Action, EndpointStatusError> {
    let api = Api::namespaced(
        ctx.client.clone(),
        &endpoint.namespace().unwrap_or_default(),
    );
    let any = AnyEndpoint::Namespaced((*endpoint).clone());
    reconcile_endpoint(endpoint.as_ref(), any, endpoint.status.clone(), api, &ctx).await
}

async fn reconcile_cluster(
    endpoint: Arc<ClusterInvitationEndpoint>,
    ctx: Arc<EndpointContext>,
) -> Result<Action, EndpointStatusError> {
    let api = Api::all(ctx.client.clone());
    let any = AnyEndpoint::Cluster((*endpoint).clone());
    reconcile_endpoint(endpoint.as_ref(), any, endpoint.status.clone(), api, &ctx).await
}

fn retry<K>(_: Arc<K>, error: &EndpointStatusError, _: Arc<EndpointContext>) -> Action {
    tracing::debug!(%error, "endpoint status");
    Action::requeue(Duration::from_secs(5))
}

/// Runs the status controllers: namespaced endpoints in `scope` (all when `None`), and
/// cluster endpoints when `cluster` is set, until `shutdown` resolves.
pub async fn run(
    ctx: Arc<EndpointContext>,
    scope: Option<String>,
    cluster: bool,
    shutdown: impl Future<Output = ()> + Send + Sync + Clone + 'static,
) {
    let client = ctx.client.clone();
    let secrets_api: Api<PartialObjectMeta<Secret>> = match &scope {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let endpoints_api: Api<InvitationEndpoint> = match &scope {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let namespaced = Controller::new(endpoints_api, watcher::Config::default());
    let store = namespaced.store();
    let operator_ns = ctx.operator_namespace.clone();
    let secrets = watcher(secrets_api, watcher::Config::default())
        .default_backoff()
        .touched_objects();
    let namespaced = namespaced
        .watches_stream(secrets, move |secret: PartialObjectMeta<Secret>| {
            let (ns, name) = (secret.namespace().unwrap_or_default(), secret.name_any());
            store
                .state()
                .into_iter()
                .filter(|ep| {
                    let loc = resolve::secret_location(
                        &AnyEndpoint::Namespaced((**ep).clone()),
                        &operator_ns,
                    );
                    loc.namespace == ns && loc.name == name
                })
                .map(|ep| ObjectRef::from_obj(ep.as_ref()))
                .collect::<Vec<_>>()
        })
        .graceful_shutdown_on(shutdown.clone())
        .run(reconcile_namespaced, retry, ctx.clone())
        .for_each(|_| async {});
    if !cluster {
        namespaced.await;
        return;
    }
    let cluster_controller = Controller::new(
        Api::<ClusterInvitationEndpoint>::all(client.clone()),
        crate::controller::cluster_endpoint_watch(ctx.cluster_endpoint_selector.as_deref()),
    )
    .graceful_shutdown_on(shutdown)
    .run(reconcile_cluster, retry, ctx)
    .for_each(|_| async {});
    futures::join!(namespaced, cluster_controller);
}
