//! Waiting for endpoints: their `Ready` condition, namespaced and cluster-scoped.

use invite_operator::api::{ClusterInvitationEndpoint, EndpointStatus, InvitationEndpoint};
use kube::Api;

use super::{TestCluster, eventually};

/// The status, reason and message of an endpoint's `Ready` condition (empty without one).
pub fn endpoint_ready(status: &Option<EndpointStatus>) -> (String, String, String) {
    status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
        .unwrap_or_default()
}

/// Whether a `Ready` condition is `status`/`reason`; `Err` names what it is.
fn is(status: &Option<EndpointStatus>, want: (&str, &str)) -> Result<(), String> {
    let (s, r, m) = endpoint_ready(status);
    let seen = format!("{s}/{r}: {m}");
    ((s.as_str(), r.as_str()) == want).then_some(()).ok_or(seen)
}

impl TestCluster {
    /// Waits until the InvitationEndpoint `name` is `Ready` `status` with `reason`.
    pub async fn wait_endpoint(
        &self,
        name: &str,
        status: &str,
        reason: &str,
    ) -> InvitationEndpoint {
        let api: Api<InvitationEndpoint> = Api::namespaced(self.client.clone(), &self.namespace);
        eventually(&format!("endpoint {name} {status}/{reason}"), async || {
            let ep = api.get(name).await.unwrap();
            is(&ep.status, (status, reason)).map(|()| ep)
        })
        .await
    }

    /// Waits until the InvitationEndpoint `name` is `Ready` `status` with `reason`; its message.
    pub async fn endpoint_message(&self, name: &str, status: &str, reason: &str) -> String {
        endpoint_ready(&self.wait_endpoint(name, status, reason).await.status).2
    }

    /// Waits until the ClusterInvitationEndpoint `name` is `Ready` (any reason).
    pub async fn wait_cluster_endpoint_ready(&self, name: &str) {
        let api: Api<ClusterInvitationEndpoint> = Api::all(self.client.clone());
        eventually(&format!("cluster endpoint {name} Ready"), async || {
            let (s, r, m) = endpoint_ready(&api.get(name).await.unwrap().status);
            (s == "True").then_some(()).ok_or(format!("{s}/{r}: {m}"))
        })
        .await
    }
}
