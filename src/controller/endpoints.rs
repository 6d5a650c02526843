//! The controller's [`Source`] for resolving endpoints: the shard's endpoint caches, a `get` of
//! the namespace, the Secrets read (and kept a while) by the client cache, and the shared,
//! coalescing clients. Also which resources this controller serves at all (endpoint
//! selectors).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::runtime::reflector::{ObjectRef, Store};

use super::{
    context::{Context, Shard},
    kubernetes::writes::namespace_labels,
};
use crate::{
    api::{AnyEndpoint, EndpointKind, InvitationEndpoint, UserInvitation},
    invite::{ApiToken, ConnectError, SharedApi},
    reconcile::resolve::{Rules, SecretLocation, Source},
};

/// The endpoints, namespaces and Secrets as the controller sees them.
pub struct Endpoints<'a> {
    /// The shared context (cluster endpoints, client and Secret caches).
    pub ctx: &'a Context,
    /// The InvitationEndpoints of the shard's namespace(s) (`None`: only cluster endpoints
    /// are looked up by reference).
    pub namespaced: Option<&'a Store<InvitationEndpoint>>,
}

impl<'a> Endpoints<'a> {
    /// The endpoints, namespaces and Secrets a shard's resources are resolved against.
    pub fn of(shard: &'a Shard) -> Endpoints<'a> {
        Endpoints {
            ctx: &shard.ctx,
            namespaced: Some(&shard.namespaced_endpoints),
        }
    }

    /// The rules of the controller's settings.
    pub fn rules(&self) -> Rules<'a> {
        let settings = &self.ctx.settings;
        Rules {
            policy: &settings.endpoint_policy,
            operator_namespace: &settings.operator_namespace,
            require_credentials_label: settings.require_credentials_label,
        }
    }

    /// Whether this controller serves the endpoint a resource names, and so the resource:
    /// always for a kind of endpoint it serves without a selector (every one of that kind in
    /// its namespaces, so a missing one is its to report as `EndpointNotFound`); with a
    /// selector for that kind only when the endpoint is in its cache, which holds exactly the
    /// endpoints the selector selects. An endpoint that does not exist is then nobody's:
    /// reporting it would make every controller with a selector write to the resource.
    pub fn serves(&self, invitation: &UserInvitation) -> bool {
        let kind = invitation.spec.endpoint_ref.kind;
        self.ctx.settings.endpoint_selector(kind).is_none() || self.endpoint(invitation).is_some()
    }
}

impl Source for Endpoints<'_> {
    type Error = kube::Error;

    fn endpoint(&self, invitation: &UserInvitation) -> Option<AnyEndpoint> {
        let r = &invitation.spec.endpoint_ref;
        match r.kind {
            EndpointKind::InvitationEndpoint => {
                let ns = invitation.metadata.namespace.as_deref().unwrap_or_default();
                self.namespaced?
                    .get(&ObjectRef::new(&r.name).within(ns))
                    .map(|e| AnyEndpoint::Namespaced(Box::new((*e).clone())))
            }
            EndpointKind::ClusterInvitationEndpoint => self
                .ctx
                .cluster_endpoints
                .get(&ObjectRef::new(&r.name))
                .map(|e| AnyEndpoint::Cluster(Box::new((*e).clone()))),
        }
    }

    async fn namespace_labels(
        &self,
        namespace: &str,
    ) -> Result<BTreeMap<String, String>, kube::Error> {
        namespace_labels(&self.ctx.client, namespace).await
    }

    async fn secret(&self, location: &SecretLocation) -> Result<Option<Secret>, kube::Error> {
        let ctx = self.ctx;
        ctx.clients
            .secret(&ctx.client, location, ctx.settings.secret_cache_ttl)
            .await
    }

    fn client(&self, endpoint: &AnyEndpoint, token: ApiToken) -> Result<SharedApi, ConnectError> {
        self.ctx
            .clients
            .client_for(endpoint, token, &self.ctx.client_settings())
    }
}
