//! Endpoints report whether they can be used: `Ready` with a reason, updated when the Secret
//! changes, written only on change.

use std::time::Duration;

use crate::common::*;
use invite_operator::api::{ClusterInvitationEndpoint, InvitationEndpoint};
use kube::Api;
use serde_json::json;

#[tokio::test]
async fn endpoints_report_their_credentials() {
    let s = Harness::running().await;
    let (c, mock) = (&s.cluster, &s.mock);
    let resolved = |name: &'static str| c.wait_endpoint(name, "True", "CredentialsResolved");

    c.user_invite_endpoint("wavefront", &mock.url, "wf-token")
        .await;
    let message = c.endpoint_message("wavefront", "False", "CredentialsNotFound");
    let message = message.await;
    assert!(message.contains("wf-token"), "{message}");
    c.put_secret("wf-token", TOKEN).await;
    resolved("wavefront").await;

    // OrgInvitation: the token exchange is tried; a wrong token is reported, then fixed.
    c.put_secret("csp-token", "wrong").await;
    c.org_endpoint("csp", &mock.url, "csp-token", "mock-org")
        .await;
    let ep = c.wait_endpoint("csp", "False", "CredentialsRejected").await;
    let status = serde_json::to_string(&ep.status).unwrap();
    assert!(!status.contains("wrong"), "no token in status");
    c.put_secret("csp-token", TOKEN).await;
    resolved("csp").await;

    // A cluster endpoint reads its Secret from the namespace its secretRef names.
    let name = c.unique("shared");
    let spec = json!({"api": "UserInvite", "url": mock.url,
                      "credentials": {"secretRef": {"name": "wf-token", "namespace": c.namespace}}});
    c.cluster_endpoint(&name, spec).await;
    c.wait_cluster_endpoint_ready(&name).await;

    // Nothing changed: no further status writes.
    let before = resolved("wavefront").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = resolved("wavefront").await;
    let versions = [before, after].map(|ep| ep.metadata.resource_version);
    assert_eq!(versions[0], versions[1]);
    s.finish().await;
}

/// `CLUSTER_ENDPOINT_SELECTOR` and `NAMESPACED_ENDPOINT_SELECTOR`
/// (`--cluster-endpoint-selector`, `--namespaced-endpoint-selector`, chart values
/// `clusterEndpointSelector`, `namespacedEndpointSelector`): the operator binary serves only the
/// endpoints it selects — it checks their credentials and invites through them — and leaves
/// the others, and every UserInvitation naming one of them, completely alone: no status (no
/// `EndpointNotFound`), no finalizer, as if they belonged to another operator.
#[cfg(unix)]
#[tokio::test]
async fn only_the_selected_endpoints_are_served() {
    let h = Harness::start().await;
    let (cluster, mock) = (&h.cluster, &h.mock);
    cluster.put_secret("api-token", TOKEN).await;
    let spec = json!({"api": "UserInvite", "url": mock.url,
                      "credentials": {"secretRef": {"name": "api-token", "namespace": cluster.namespace}}});
    let (selected, ignored) = (cluster.unique("selected"), cluster.unique("ignored"));
    let mut labels = cluster.labels();
    labels["invite-e2e/served"] = json!("yes");
    cluster
        .cluster_endpoint_labelled(&selected, spec.clone(), labels.clone())
        .await;
    cluster.cluster_endpoint(&ignored, spec).await;
    let ns_spec = json!({"api": "UserInvite", "url": mock.url,
                         "credentials": {"secretRef": {"name": "api-token"}}});
    cluster
        .apply_endpoint_labelled("ns-selected", ns_spec.clone(), labels)
        .await;
    cluster.apply_endpoint("ns-ignored", ns_spec).await;
    let selector = format!("{},invite-e2e/served=yes", cluster.selector());
    let operator = OperatorProcess::start(
        cluster,
        "operator",
        &[
            ("CLUSTER_ENDPOINT_SELECTOR", &selector),
            ("NAMESPACED_ENDPOINT_SELECTOR", "invite-e2e/served=yes"),
        ],
    );

    let (cluster_kind, ns_kind) = ("ClusterInvitationEndpoint", "InvitationEndpoint");
    for (name, kind, endpoint, email) in [
        ("ignored", cluster_kind, ignored.as_str(), "b@example.com"),
        ("ns-ignored", ns_kind, "ns-ignored", "d@example.com"),
        ("missing", ns_kind, "missing", "e@example.com"),
        ("selected", cluster_kind, selected.as_str(), "a@example.com"),
        ("ns-selected", ns_kind, "ns-selected", "c@example.com"),
    ] {
        let spec = json!({"endpointRef": {"kind": kind, "name": endpoint}, "deletionPolicy": "Delete",
                          "users": [{"emailAddress": email, "groups": [], "userGroups": []}]});
        cluster.create_invitation(name, spec).await;
    }
    cluster.wait_ready("selected").await;
    cluster.wait_ready("ns-selected").await;
    let api: Api<ClusterInvitationEndpoint> = Api::all(cluster.client.clone());
    cluster.wait_cluster_endpoint_ready(&selected).await;
    let ns_selected = cluster.wait_endpoint("ns-selected", "True", "CredentialsResolved");
    ns_selected.await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let status = api.get(&ignored).await.unwrap().status;
    assert_eq!(status, None, "the ignored endpoint is not checked");
    let namespaced: Api<InvitationEndpoint> =
        Api::namespaced(cluster.client.clone(), &cluster.namespace);
    let status = namespaced.get("ns-ignored").await.unwrap().status;
    assert_eq!(status, None, "the ignored namespaced one is not checked");
    for name in ["ignored", "ns-ignored", "missing"] {
        let inv = cluster.invitations().get(name).await.unwrap();
        assert_eq!(inv.status, None, "{name} is left alone");
        assert!(inv.metadata.finalizers.is_none(), "{name}: no finalizer");
        assert!(cluster.events_of(name).await.is_empty(), "{name}: no event");
    }
    assert_sent(mock, &["a@example.com", "c@example.com"], 1);
    let never = ["b@example.com", "d@example.com", "e@example.com"];
    assert_sent(mock, &never, 0);
    operator.terminate().await;
    h.finish().await;
}
