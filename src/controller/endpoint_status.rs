//! The `Ready` condition of InvitationEndpoints and ClusterInvitationEndpoints: the platform
//! allows the URL, the token Secret resolves, the settings build a client, and (OrgInvitation)
//! the token exchange works. Checked when the endpoint changes, then again after a short while
//! when not Ready (Secrets are read, never watched) and on every resync when Ready. Written only
//! when it changes, and only for the endpoints this controller serves: with an endpoint selector
//! the watch lists the selected ones only, so another controller's endpoint is never checked or
//! written (a status write is guarded by the resourceVersion it read, so one that lost its
//! selection meanwhile, a label change, is not written either).

use std::{sync::Arc, time::Duration};

use futures::StreamExt;
use kube::{
    Api, Resource, ResourceExt,
    runtime::{Controller, controller::Action, reflector::ObjectRef, watcher},
};
use serde::de::DeserializeOwned;

use super::{
    context::Context,
    endpoints::Endpoints,
    error::ReconcileError,
    kubernetes::writes::{SteadyTriggerBackoff, guarded_status_write, scoped},
};
use crate::{
    api::{
        AnyEndpoint, ClusterInvitationEndpoint, EndpointKind, EndpointStatus, InvitationEndpoint,
    },
    invite::ErrorCategory,
    reconcile::{
        WriteError, plan,
        resolve::{self, Credentials, Source},
    },
    telemetry::EndpointLabels,
};

/// How soon an endpoint that is not Ready is checked again (Secrets are not watched): 30 base
/// retry delays (30 s by default), never more than the longest retry delay.
fn recheck_not_ready(ctx: &Context) -> Duration {
    (ctx.settings.retry_base_delay * 30).min(ctx.settings.retry_max_delay)
}

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

/// What an endpoint's Ready reason asks of a reader beside Ready (kstatus): a missing Secret
/// (often written shortly after the endpoint) and an unreachable API resolve by themselves;
/// the rest need a person.
pub fn progress(ready: bool, reason: &str) -> plan::Progress {
    match reason {
        _ if ready => plan::Progress::Done,
        "CredentialsNotFound" | "Unreachable" => plan::Progress::Reconciling,
        _ => plan::Progress::Stalled,
    }
}

impl EndpointCheck {
    fn not_ready(reason: &'static str, message: impl Into<String>) -> EndpointCheck {
        EndpointCheck {
            ready: false,
            reason,
            message: message.into(),
        }
    }
}

/// Checks one endpoint.
pub async fn check(ctx: &Context, endpoint: &AnyEndpoint) -> Result<EndpointCheck, kube::Error> {
    if let Err(blocked) = resolve::check_urls(endpoint, &ctx.settings.endpoint_policy) {
        let reason = match blocked.reason {
            crate::reconcile::plan::ReadyReason::NotAllowed => "NotAllowed",
            _ => "InvalidConfiguration",
        };
        return Ok(EndpointCheck::not_ready(reason, blocked.message));
    }
    let source = Endpoints {
        ctx,
        namespaced: None,
    };
    let (location, credentials) = resolve::credentials(&source, source.rules(), endpoint).await?;
    let token = match credentials {
        Credentials::Token(token) => token,
        Credentials::Missing(blocked) => {
            return Ok(EndpointCheck::not_ready(
                "CredentialsNotFound",
                blocked.message,
            ));
        }
        Credentials::NotLabelled(blocked) => {
            return Ok(EndpointCheck::not_ready(
                "SecretNotLabelled",
                blocked.message,
            ));
        }
    };
    let api = match source.client(endpoint, token) {
        Ok(api) => api,
        Err(error) => {
            return Ok(EndpointCheck::not_ready(
                "InvalidConfiguration",
                error.to_string(),
            ));
        }
    };
    if let Some(limit) = api.limit_exceeded() {
        return Ok(EndpointCheck::not_ready("LimitExceeded", limit));
    }
    Ok(match api.verify_credentials().await {
        Ok(()) => EndpointCheck {
            ready: true,
            reason: "CredentialsResolved",
            message: format!(
                "the token is read from Secret {}/{} key {:?}",
                location.namespace, location.name, location.key
            ),
        },
        Err(error) => {
            let reason = match error.category() {
                ErrorCategory::Transient => "Unreachable",
                _ => {
                    ctx.clients.forget_secret(&location);
                    "CredentialsRejected"
                }
            };
            EndpointCheck::not_ready(reason, error.to_string())
        }
    })
}

/// The next status of an endpoint.
pub fn next_status(
    previous: &EndpointStatus,
    generation: i64,
    check: &EndpointCheck,
) -> EndpointStatus {
    EndpointStatus {
        conditions: plan::conditions(
            &previous.conditions,
            progress(check.ready, check.reason),
            check.reason,
            check.message.clone(),
            generation,
            plan::now(),
        ),
        observed_generation: Some(generation),
    }
}

/// Checks one endpoint and writes its status if it changed.
async fn reconcile_endpoint<K>(
    object: &K,
    any: AnyEndpoint,
    previous: Option<EndpointStatus>,
    api: Api<K>,
    ctx: &Context,
) -> Result<Action, ReconcileError>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let result = check(ctx, &any).await?;
    ctx.metrics
        .endpoint_ready
        .get_or_create(&endpoint_labels(kind_of(&any), object.meta()))
        .set(i64::from(result.ready));
    let previous = previous.unwrap_or_default();
    let next = next_status(&previous, object.meta().generation.unwrap_or(0), &result);
    if next != previous {
        let version = object.resource_version().unwrap_or_default();
        match guarded_status_write(&api, &object.name_any(), &version, &next).await {
            // Changed meanwhile: the change triggers another check.
            Err(WriteError::Conflict) => return Ok(Action::await_change()),
            other => other?,
        };
    }
    Ok(Action::requeue(if result.ready {
        ctx.settings.resync_interval
    } else {
        recheck_not_ready(ctx)
    }))
}

async fn reconcile_namespaced(
    endpoint: Arc<InvitationEndpoint>,
    ctx: Arc<Context>,
) -> Result<Action, ReconcileError> {
    let api = Api::namespaced(
        ctx.client.clone(),
        &endpoint.namespace().unwrap_or_default(),
    );
    let any = AnyEndpoint::Namespaced(Box::new((*endpoint).clone()));
    reconcile_endpoint(endpoint.as_ref(), any, endpoint.status.clone(), api, &ctx).await
}

async fn reconcile_cluster(
    endpoint: Arc<ClusterInvitationEndpoint>,
    ctx: Arc<Context>,
) -> Result<Action, ReconcileError> {
    let api = Api::all(ctx.client.clone());
    let any = AnyEndpoint::Cluster(Box::new((*endpoint).clone()));
    reconcile_endpoint(endpoint.as_ref(), any, endpoint.status.clone(), api, &ctx).await
}

fn retry<K>(_: Arc<K>, error: &ReconcileError, _: Arc<Context>) -> Action {
    tracing::warn!(%error, "checking an endpoint failed");
    Action::requeue(Duration::from_secs(5))
}

fn kind_of(endpoint: &AnyEndpoint) -> EndpointKind {
    if endpoint.is_namespaced() {
        EndpointKind::InvitationEndpoint
    } else {
        EndpointKind::ClusterInvitationEndpoint
    }
}

/// The labels of an endpoint's series in the readiness gauge.
fn endpoint_labels(
    kind: EndpointKind,
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> EndpointLabels {
    EndpointLabels {
        kind: kind.to_string(),
        namespace: meta.namespace.clone().unwrap_or_default(),
        name: meta.name.clone().unwrap_or_default(),
    }
}

/// Logs what the controller's stream reports as failed (a reconcile failure was already
/// logged by [`retry`]); a deleted endpoint (no longer found) leaves the readiness gauge.
async fn log_failures<T, E: std::fmt::Display>(
    result: Result<T, kube::runtime::controller::Error<E, watcher::Error>>,
    kind: EndpointKind,
    ctx: &Context,
) {
    match result {
        Ok(_) => {}
        Err(kube::runtime::controller::Error::ObjectNotFound(object)) => {
            let meta = k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some(object.name.clone()),
                namespace: object.namespace.clone(),
                ..Default::default()
            };
            ctx.metrics
                .endpoint_ready
                .remove(&endpoint_labels(kind, &meta));
        }
        Err(kube::runtime::controller::Error::ReconcilerFailed(error, object)) => {
            tracing::debug!(%object, %error, "endpoint check failed");
        }
        Err(error) => tracing::warn!(%error, "endpoint status controller"),
    }
}

/// The endpoints of `kind` (namespaced ones in `scope`, all when `None`) whose check is due
/// now (see [`Context::endpoint_rechecks`]).
fn rechecks<K>(
    ctx: &Context,
    kind: EndpointKind,
    scope: Option<String>,
) -> impl futures::Stream<Item = ObjectRef<K>> + Send + 'static
where
    K: Resource<DynamicType = ()> + 'static,
{
    let receiver = ctx.endpoint_rechecks.subscribe();
    futures::stream::unfold(receiver, |mut receiver| async move {
        loop {
            match receiver.recv().await {
                Ok(key) => return Some((key, receiver)),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
    .filter_map(move |key| {
        let wanted = key.kind == kind
            && (kind == EndpointKind::ClusterInvitationEndpoint
                || scope.is_none()
                || key.namespace == scope);
        let reference = ObjectRef::<K>::new(&key.name);
        let reference = match (kind, key.namespace) {
            (EndpointKind::InvitationEndpoint, Some(ns)) => reference.within(&ns),
            _ => reference,
        };
        futures::future::ready(wanted.then_some(reference))
    })
}

/// Runs the status controllers: namespaced endpoints in `scope` (all when `None`), and
/// cluster endpoints when `cluster` is set, until `shutdown` is cancelled.
pub async fn run(
    ctx: Arc<Context>,
    scope: Option<String>,
    cluster: bool,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let namespaced = Controller::new(
        scoped::<InvitationEndpoint>(&ctx.client, scope.as_deref()),
        ctx.settings
            .endpoint_watch(EndpointKind::InvitationEndpoint),
    )
    .trigger_backoff(SteadyTriggerBackoff)
    .reconcile_on(rechecks(
        &ctx,
        EndpointKind::InvitationEndpoint,
        scope.clone(),
    ))
    .graceful_shutdown_on(shutdown.clone().cancelled_owned())
    .run(reconcile_namespaced, retry, ctx.clone())
    .for_each(|result| {
        let ctx = ctx.clone();
        async move { log_failures(result, EndpointKind::InvitationEndpoint, &ctx).await }
    });
    if !cluster {
        namespaced.await;
        return;
    }
    let config = ctx
        .settings
        .endpoint_watch(EndpointKind::ClusterInvitationEndpoint);
    let cluster_controller = Controller::new(
        Api::<ClusterInvitationEndpoint>::all(ctx.client.clone()),
        config,
    )
    .trigger_backoff(SteadyTriggerBackoff)
    .reconcile_on(rechecks(
        &ctx,
        EndpointKind::ClusterInvitationEndpoint,
        None,
    ))
    .graceful_shutdown_on(shutdown.cancelled_owned())
    .run(reconcile_cluster, retry, ctx.clone())
    .for_each(|result| {
        let ctx = ctx.clone();
        async move { log_failures(result, EndpointKind::ClusterInvitationEndpoint, &ctx).await }
    });
    futures::join!(namespaced, cluster_controller);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(ready: bool, reason: &'static str) -> EndpointCheck {
        EndpointCheck {
            ready,
            reason,
            message: format!("{reason} happened"),
        }
    }

    fn types(status: &EndpointStatus) -> Vec<(&str, &str, &str, Option<i64>)> {
        status
            .conditions
            .iter()
            .map(|c| {
                let generation = c.observed_generation;
                (
                    c.type_.as_str(),
                    c.status.as_str(),
                    c.reason.as_str(),
                    generation,
                )
            })
            .collect()
    }

    #[test]
    fn endpoint_conditions_follow_kstatus() {
        let cases = [
            (true, "CredentialsResolved", None),
            (false, "CredentialsNotFound", Some("Reconciling")),
            (false, "Unreachable", Some("Reconciling")),
            (false, "SecretNotLabelled", Some("Stalled")),
            (false, "CredentialsRejected", Some("Stalled")),
            (false, "InvalidConfiguration", Some("Stalled")),
            (false, "NotAllowed", Some("Stalled")),
            (false, "LimitExceeded", Some("Stalled")),
        ];
        for (ready, reason, second) in cases {
            let status = next_status(&EndpointStatus::default(), 4, &check(ready, reason));
            let ready = if ready { "True" } else { "False" };
            let mut expected = vec![("Ready", ready, reason, Some(4))];
            expected.extend(second.map(|t| (t, "True", reason, Some(4))));
            assert_eq!(types(&status), expected);
            assert_eq!(status.observed_generation, Some(4));
            let again = next_status(&status, 4, &check(ready == "True", reason));
            assert_eq!(again, status, "{reason}: an unchanged check writes nothing");
        }
    }
}
