//! Bad input is refused at admission by the CRDs' schema and CEL rules, exactly as a real API
//! server applies them (the in-process server evaluates the same schema and CEL).

use crate::common::{TestCluster, admission_checked};
use invite_operator::api::{InvitationEndpoint, UserInvitation};
use kube::{Api, api::PostParams};
use serde_json::{Value, json};

async fn create(cluster: &TestCluster, name: &str, spec: Value) -> Result<UserInvitation, String> {
    let object: Value = json!({
        "apiVersion": "invite.operators.dev/v1alpha1",
        "kind": "UserInvitation",
        "metadata": cluster.metadata(name),
        "spec": spec,
    });
    let api: Api<kube::core::DynamicObject> = Api::namespaced_with(
        cluster.client.clone(),
        &cluster.namespace,
        &kube::core::ApiResource::erase::<UserInvitation>(&()),
    );
    let object: kube::core::DynamicObject = serde_json::from_value(object).unwrap();
    match api.create(&PostParams::default(), &object).await {
        Ok(created) => Ok(serde_json::from_value(serde_json::to_value(created).unwrap()).unwrap()),
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 422, "{status:?}");
            Err(status.message)
        }
        Err(other) => panic!("unexpected error: {other}"),
    }
}

fn users(emails: &[&str]) -> Value {
    json!(
        emails
            .iter()
            .map(|e| json!({"emailAddress": e, "groups": [], "userGroups": []}))
            .collect::<Vec<_>>()
    )
}

#[tokio::test]
async fn user_invitations_are_validated_at_admission() {
    if !admission_checked() {
        return;
    }
    let cluster = TestCluster::start().await;

    let ok = create(&cluster, "ok", json!({"users": users(&["a@example.com"])}))
        .await
        .unwrap();
    assert_eq!(
        ok.spec.endpoint_ref.name, "default",
        "endpointRef is defaulted"
    );
    assert_eq!(
        ok.spec.endpoint_ref.kind,
        invite_operator::api::EndpointKind::ClusterInvitationEndpoint
    );

    let bad_email = create(
        &cluster,
        "bad-email",
        json!({"users": users(&["not an email"])}),
    )
    .await;
    assert!(bad_email.unwrap_err().contains("emailAddress"));

    let duplicate = create(
        &cluster,
        "dup",
        json!({"users": users(&["a@example.com", "a@example.com"])}),
    )
    .await;
    assert!(duplicate.unwrap_err().contains("Duplicate value"));

    let both = create(
        &cluster,
        "both",
        json!({"users": users(&["a@example.com"]), "orgInvitation": {"usernames": ["b@example.com"]}}),
    )
    .await;
    assert!(both.unwrap_err().contains("exactly one of users"));
    let neither = create(&cluster, "neither", json!({"accessPolicy": "InviteOnly"})).await;
    assert!(neither.unwrap_err().contains("exactly one of users"));

    let empty = create(&cluster, "empty", json!({"users": []})).await;
    assert!(empty.is_err());
    let many: Vec<String> = (0..1001).map(|i| format!("u{i}@example.com")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let too_many = create(&cluster, "too-many", json!({"users": users(&many)})).await;
    assert!(too_many.unwrap_err().contains("1000"));

    let bad_policy = create(
        &cluster,
        "bad-policy",
        json!({"users": users(&["a@example.com"]), "accessPolicy": "Sometimes"}),
    )
    .await;
    assert!(bad_policy.unwrap_err().contains("accessPolicy"));

    let dup_org = create(
        &cluster,
        "dup-org",
        json!({"orgInvitation": {"usernames": ["b@example.com", "b@example.com"]}}),
    )
    .await;
    assert!(dup_org.unwrap_err().contains("Duplicate value"));
    cluster.cleanup().await;
}

#[tokio::test]
async fn only_plain_addresses_are_admitted() {
    if !admission_checked() {
        return;
    }
    // One mailbox in two spellings is refused by the CRD's CEL rule on both address fields
    // (`format: email` alone admits most of these on kube-apiserver: Go's `net/mail`).
    let cluster = TestCluster::start().await;
    let plain = "must be a plain email address";
    for (i, address) in [
        "Alice <alice@example.com>",
        "<alice@example.com>",
        "alice@example.com(work)",
        "\"alice\"@example.com",
        "@relay.example.com:alice@example.com",
        "alice@example.com.",
        "al..ice@example.com",
        "alice@localhost",
        "\u{e4}lice@example.com",
    ]
    .into_iter()
    .enumerate()
    {
        for (name, spec, field) in [
            (
                format!("u{i}"),
                json!({"users": users(&[address])}),
                "emailAddress",
            ),
            (
                format!("o{i}"),
                json!({"orgInvitation": {"usernames": [address]}}),
                "usernames",
            ),
        ] {
            let message = create(&cluster, &name, spec).await.unwrap_err();
            // A real API server checks `format: email` first, and then skips the CEL rules.
            let by_format = message.contains("must be of type email");
            assert!(
                (message.contains(plain) || by_format) && message.contains(field),
                "{address}: {message}"
            );
        }
    }
    // Case and plus-addressing are plain (the controller folds case; `+ops` is another person).
    create(
        &cluster,
        "plain",
        json!({"users": users(&["Alice@Example.COM", "alice+ops@example.com", "o'brien@example.co.uk"])}),
    )
    .await
    .unwrap();
    create(
        &cluster,
        "plain-org",
        json!({"orgInvitation": {"usernames": ["Bob@Example.COM", "bob+ops@xn--exmple-cua.com"]}}),
    )
    .await
    .unwrap();
    cluster.cleanup().await;
}

#[tokio::test]
async fn endpoints_are_validated_at_admission() {
    if !admission_checked() {
        return;
    }
    let cluster = TestCluster::start().await;
    let api: Api<InvitationEndpoint> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    let endpoint = |name: &str, spec: Value| -> InvitationEndpoint {
        serde_json::from_value(json!({
            "apiVersion": "invite.operators.dev/v1alpha1", "kind": "InvitationEndpoint",
            "metadata": cluster.metadata(name), "spec": spec
        }))
        .unwrap()
    };
    let pp = PostParams::default();
    let ok = api
        .create(&pp, &endpoint("ok", json!({"api": "UserInvite", "url": "https://x.example.com", "credentials": {"secretRef": {"name": "t"}}})))
        .await
        .unwrap();
    assert_eq!(ok.spec.connection.requests_per_second, 50);
    assert_eq!(ok.spec.connection.credentials.secret_ref.key, "token");

    let refused = |r: Result<InvitationEndpoint, kube::Error>| match r {
        Err(kube::Error::Api(s)) if s.code == 422 => s.message,
        other => panic!("expected 422, got {other:?}"),
    };
    let msg = refused(
        api.create(&pp, &endpoint("org", json!({"api": "OrgInvitation", "url": "https://x.example.com", "credentials": {"secretRef": {"name": "t"}}})))
            .await,
    );
    assert!(msg.contains("organizationId is required"), "{msg}");
    let msg = refused(
        api.create(&pp, &endpoint("ns", json!({"api": "UserInvite", "url": "https://x.example.com", "credentials": {"secretRef": {"name": "t", "namespace": "elsewhere"}}})))
            .await,
    );
    assert!(msg.contains("own namespace"), "{msg}");
    let msg = refused(
        api.create(&pp, &endpoint("url", json!({"api": "UserInvite", "url": "ftp://x", "credentials": {"secretRef": {"name": "t"}}})))
            .await,
    );
    assert!(msg.contains("url"), "{msg}");
    cluster.cleanup().await;
}

/// No CRD default creates a field a manifest did not write (in `spec` or inside its lists): a
/// GitOps tool comparing the manifest with the stored object (Argo CD's client-side diff) would
/// otherwise never see them in sync. Every resource of every example is created (in the test's
/// namespace; cluster-scoped ones under a unique name) and read back: its spec is exactly the
/// manifest's.
#[tokio::test]
async fn examples_are_stored_exactly_as_written() {
    if !admission_checked() {
        return;
    }
    let cluster = TestCluster::start().await;
    let dir = crate::common::package_path("examples");
    let mut checked = 0;
    for file in std::fs::read_dir(&dir).unwrap() {
        let path = file.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let documents: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
        for mut document in documents.into_iter().filter(|d| !d.is_null()) {
            let kind = document["kind"].as_str().unwrap_or_default().to_string();
            let (resource, namespaced) = match kind.as_str() {
                "UserInvitation" => (kube::core::ApiResource::erase::<UserInvitation>(&()), true),
                "InvitationEndpoint" => (
                    kube::core::ApiResource::erase::<InvitationEndpoint>(&()),
                    true,
                ),
                "ClusterInvitationEndpoint" => (
                    kube::core::ApiResource::erase::<invite_operator::api::ClusterInvitationEndpoint>(
                        &(),
                    ),
                    false,
                ),
                _ => continue,
            };
            let name = format!(
                "{}-{checked}",
                document["metadata"]["name"].as_str().unwrap()
            );
            document["metadata"] = if namespaced {
                cluster.metadata(&name)
            } else {
                json!({"name": cluster.unique(&name), "labels": cluster.labels()})
            };
            let api: Api<kube::core::DynamicObject> = if namespaced {
                Api::namespaced_with(cluster.client.clone(), &cluster.namespace, &resource)
            } else {
                Api::all_with(cluster.client.clone(), &resource)
            };
            let object: kube::core::DynamicObject =
                serde_json::from_value(document.clone()).unwrap();
            let created = api
                .create(&PostParams::default(), &object)
                .await
                .unwrap_or_else(|e| panic!("{}: {kind}: {e}", path.display()));
            let stored = serde_json::to_value(&created).unwrap();
            assert_eq!(
                stored["spec"],
                document["spec"],
                "{}: {kind} {name} is stored with fields its manifest does not write",
                path.display()
            );
            checked += 1;
        }
    }
    assert!(checked >= 5, "only {checked} resources in examples/");
    cluster.cleanup().await;
}
