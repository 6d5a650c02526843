//! Helpers shared by the tenancy, bad-input, admission and holes tests: creating objects the
//! API server may refuse, reading messages, and a tenant's own namespace.

use invite_operator::api::{InvitationEndpoint, UserStatus};
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, Resource,
    api::PostParams,
    core::{ApiResource, DynamicObject},
};
use serde_json::{Value, json};

use super::{Harness, TOKEN, TestCluster, admission_checked};
use invite_operator::controller::Settings;

/// Creates `kind` `name` (labelled as the test's) with `spec` in the test's namespace, as a
/// client would send it (no typed struct in between). `Err`: admission refused it (a 422,
/// asserted), with the API server's message.
pub async fn admit<K: Resource<DynamicType = ()>>(
    cluster: &TestCluster,
    name: &str,
    spec: Value,
) -> Result<DynamicObject, String> {
    let resource = ApiResource::erase::<K>(&());
    let object: DynamicObject = serde_json::from_value(json!({
        "apiVersion": resource.api_version, "kind": resource.kind,
        "metadata": cluster.metadata(name), "spec": spec,
    }))
    .unwrap();
    let api = Api::<DynamicObject>::namespaced_with(
        cluster.client.clone(),
        &cluster.namespace,
        &resource,
    );
    match api.create(&PostParams::default(), &object).await {
        Ok(created) => Ok(created),
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 422, "{name}: {status:?}");
            Err(status.message)
        }
        Err(other) => panic!("{name}: {other}"),
    }
}

/// Whether a user's status message contains `text`.
pub fn says(user: &UserStatus, text: &str) -> bool {
    user.message.as_deref().is_some_and(|m| m.contains(text))
}

/// Creates, in `namespace`, the InvitationEndpoint `name` with `spec` and the Secret its
/// `secretRef` names, holding [`TOKEN`] and labelled for endpoints.
pub async fn endpoint_in(cluster: &TestCluster, namespace: &str, name: &str, spec: Value) {
    let mut labels = cluster.labels();
    labels["invite.operators.dev/credentials"] = json!("true");
    let secret_name = &spec["credentials"]["secretRef"]["name"];
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": secret_name, "namespace": namespace, "labels": labels},
        "stringData": {"token": TOKEN},
    }))
    .unwrap();
    let pp = PostParams::default();
    let secrets = Api::<Secret>::namespaced(cluster.client.clone(), namespace);
    secrets.create(&pp, &secret).await.unwrap();
    let endpoint: InvitationEndpoint = serde_json::from_value(json!({
        "apiVersion": "invite.operators.dev/v1alpha1", "kind": "InvitationEndpoint",
        "metadata": {"name": name, "namespace": namespace, "labels": cluster.labels()},
        "spec": spec,
    }))
    .unwrap();
    let endpoints = Api::<InvitationEndpoint>::namespaced(cluster.client.clone(), namespace);
    endpoints.create(&pp, &endpoint).await.unwrap();
}

/// A cluster whose API server checks admission ([`admission_checked`]); `None` (the test is
/// skipped, saying why) with the in-process one.
pub async fn admission_cluster() -> Option<TestCluster> {
    if admission_checked() {
        Some(TestCluster::start().await)
    } else {
        None
    }
}

/// Starts `h`'s controller with the test's settings, `tweak`ed.
pub fn start_with(h: &mut Harness, tweak: impl FnOnce(&mut Settings)) {
    let mut settings = h.cluster.settings();
    tweak(&mut settings);
    h.start_controller_with(settings);
}

/// Stops `h`'s controller, then starts it again with the test's settings, `tweak`ed.
pub async fn restart_with(h: &mut Harness, tweak: impl FnOnce(&mut Settings)) {
    h.controller
        .take()
        .expect("a running controller")
        .stop()
        .await;
    start_with(h, tweak);
}
