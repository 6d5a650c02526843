//! Finding a UserInvitation's endpoint, checking that it may serve the resource, reading its
//! token and getting its (shared, coalescing) client.

use std::collections::BTreeMap;

use kube::runtime::reflector::ObjectRef;

use super::{
    clients::Credentials,
    context::{Context, Shard},
    kubernetes::namespace_labels,
};
use crate::{
    api::{AnyEndpoint, ApiIdentity, EndpointKind, UserInvitation},
    invite::{SharedApi, api_identity},
    reconcile::{
        plan::{Blocked, ReadyReason},
        resolve::{self, CheckContext, SecretLocation},
    },
};

/// An endpoint ready to serve a resource.
pub struct Resolved {
    /// The endpoint.
    pub endpoint: AnyEndpoint,
    /// Its client (calls coalesce with every other resource using it).
    pub api: SharedApi,
    /// The API it reaches.
    pub identity: ApiIdentity,
    /// Where its token is.
    pub location: SecretLocation,
}

/// Whether a resource can be worked on.
pub enum Resolution {
    /// Yes, through this endpoint.
    Ready(Box<Resolved>),
    /// No, and why.
    Blocked(Blocked),
    /// Not by this controller: its endpoint is not one this controller serves (see
    /// [`serves`]). Nothing may be written to the resource.
    NotServed,
}

/// Whether this controller serves the endpoint a resource names, and so the resource: always
/// for a kind of endpoint it serves without a selector (every one of that kind in its
/// namespaces, so a missing one is its to report as `EndpointNotFound`); with a selector for
/// that kind only when the endpoint is in its cache, which holds exactly the endpoints the
/// selector selects. An endpoint that does not exist is then nobody's: reporting it would make
/// every controller with a selector write to the resource.
pub fn serves(shard: &Shard, invitation: &UserInvitation) -> bool {
    let kind = invitation.spec.endpoint_ref.kind;
    shard.ctx.settings.endpoint_selector(kind).is_none() || is_cached(shard, invitation)
}

/// Whether the endpoint a resource names is in the shard's caches.
fn is_cached(shard: &Shard, invitation: &UserInvitation) -> bool {
    let r = &invitation.spec.endpoint_ref;
    match r.kind {
        EndpointKind::InvitationEndpoint => {
            let ns = invitation.metadata.namespace.as_deref().unwrap_or_default();
            shard
                .namespaced_endpoints
                .get(&ObjectRef::new(&r.name).within(ns))
                .is_some()
        }
        EndpointKind::ClusterInvitationEndpoint => shard
            .ctx
            .cluster_endpoints
            .get(&ObjectRef::new(&r.name))
            .is_some(),
    }
}

/// The endpoint a resource references, from the shard's caches.
pub fn find_endpoint(shard: &Shard, invitation: &UserInvitation) -> Option<AnyEndpoint> {
    let r = &invitation.spec.endpoint_ref;
    match r.kind {
        EndpointKind::InvitationEndpoint => {
            let ns = invitation.metadata.namespace.as_deref().unwrap_or_default();
            shard
                .namespaced_endpoints
                .get(&ObjectRef::new(&r.name).within(ns))
                .map(|e| AnyEndpoint::Namespaced(Box::new((*e).clone())))
        }
        EndpointKind::ClusterInvitationEndpoint => shard
            .ctx
            .cluster_endpoints
            .get(&ObjectRef::new(&r.name))
            .map(|e| AnyEndpoint::Cluster(Box::new((*e).clone()))),
    }
}

/// Finds the endpoint, checks it may serve the resource (`requested_users` of them), reads
/// the token and returns the endpoint's client. An endpoint this controller does not serve
/// (any more) is [`Resolution::NotServed`], never `EndpointNotFound`.
pub async fn resolve(
    shard: &Shard,
    invitation: &UserInvitation,
    requested_users: usize,
) -> Result<Resolution, kube::Error> {
    let ctx = &shard.ctx;
    let endpoint = find_endpoint(shard, invitation);
    if endpoint.is_none() && !serves(shard, invitation) {
        // It left this controller's selection since the pass began (relabelled or deleted).
        return Ok(Resolution::NotServed);
    }
    let labels = match &endpoint {
        Some(AnyEndpoint::Cluster(c)) if c.spec.namespace_selector.is_some() => {
            let namespace = invitation.metadata.namespace.as_deref().unwrap_or_default();
            namespace_labels(&ctx.client, namespace).await?
        }
        _ => BTreeMap::new(),
    };
    let check = CheckContext {
        namespace_labels: &labels,
        requested_users,
        policy: &ctx.settings.endpoint_policy,
    };
    if let Err(blocked) = resolve::check_endpoint(invitation, endpoint.as_ref(), check) {
        return Ok(Resolution::Blocked(blocked));
    }
    let endpoint = endpoint.expect("checked above");
    connect(ctx, endpoint).await
}

/// The token and client of an endpoint that passed its checks.
pub async fn connect(ctx: &Context, endpoint: AnyEndpoint) -> Result<Resolution, kube::Error> {
    let not_ready = |message: String| {
        Ok(Resolution::Blocked(Blocked::new(
            ReadyReason::EndpointNotReady,
            message,
        )))
    };
    let identity = match api_identity(endpoint.connection()) {
        Ok(identity) => identity,
        Err(invalid) => return not_ready(invalid.to_string()),
    };
    let location = resolve::secret_location(&endpoint, &ctx.settings.operator_namespace);
    let require_label = endpoint.is_namespaced() && ctx.settings.require_credentials_label;
    let token = match ctx
        .clients
        .token(
            &ctx.client,
            &location,
            ctx.settings.secret_cache_ttl,
            require_label,
        )
        .await?
    {
        Credentials::Token(token) => token,
        Credentials::Missing(blocked) | Credentials::NotLabelled(blocked) => {
            return Ok(Resolution::Blocked(blocked));
        }
    };
    match ctx
        .clients
        .client_for(&endpoint, token, &super::client_settings(ctx))
    {
        Ok(api) => Ok(Resolution::Ready(Box::new(Resolved {
            endpoint,
            api,
            identity,
            location,
        }))),
        Err(error) => not_ready(error.to_string()),
    }
}
