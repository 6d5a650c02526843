//! Bad input is refused at admission by the CRDs' schema and CEL rules, exactly as a real API
//! server applies them (real API server only: the in-process one evaluates no schema).

use crate::common::{
    TestCluster,
    tenancy_kit::{admission_cluster, admit},
};
use invite_operator::api::{ClusterInvitationEndpoint, InvitationEndpoint, UserInvitation};
use kube::{
    Api,
    api::PostParams,
    core::{ApiResource, DynamicObject},
};
use serde_json::{Value, json};

async fn create(cluster: &TestCluster, name: &str, spec: Value) -> Result<UserInvitation, String> {
    let created = admit::<UserInvitation>(cluster, name, spec).await?;
    Ok(serde_json::from_value(serde_json::to_value(created).unwrap()).unwrap())
}

fn users(emails: &[&str]) -> Value {
    let users: Vec<Value> = emails
        .iter()
        .map(|e| json!({"emailAddress": e, "groups": [], "userGroups": []}))
        .collect();
    json!(users)
}

/// Each case of `table` (`[name, spec, what the refusal says]`) is refused by `create`, the
/// message saying so.
async fn assert_refused(table: Value, create: impl AsyncFn(&str, Value) -> Result<(), String>) {
    for row in table.as_array().unwrap() {
        let (name, says) = (row[0].as_str().unwrap(), row[2].as_str().unwrap());
        let message = create(name, row[1].clone()).await.unwrap_err();
        assert!(message.contains(says), "{name}: {message}");
    }
}

#[tokio::test]
async fn user_invitations_are_validated_at_admission() {
    let Some(cluster) = admission_cluster().await else {
        return;
    };

    let ok = create(&cluster, "ok", json!({"users": users(&["a@example.com"])}))
        .await
        .unwrap();
    let endpoint_ref = &ok.spec.endpoint_ref;
    assert_eq!(endpoint_ref.name, "default", "endpointRef is defaulted");
    let cluster_endpoint = invite_operator::api::EndpointKind::ClusterInvitationEndpoint;
    assert_eq!(endpoint_ref.kind, cluster_endpoint);

    let many: Vec<String> = (0..1001).map(|i| format!("u{i}@example.com")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let a = users(&["a@example.com"]);
    // [name, spec, what the refusal says ("": any refusal)]
    let refused = json!([
        ["bad-email", {"users": users(&["not an email"])}, "emailAddress"],
        ["dup", {"users": users(&["a@example.com", "a@example.com"])}, "Duplicate value"],
        ["both", {"users": a, "orgInvitation": {"usernames": ["b@example.com"]}}, "exactly one of users"],
        ["neither", {"accessPolicy": "InviteOnly"}, "exactly one of users"],
        ["empty", {"users": []}, ""],
        ["too-many", {"users": users(&many)}, "1000"],
        ["bad-policy", {"users": a, "accessPolicy": "Sometimes"}, "accessPolicy"],
        ["dup-org", {"orgInvitation": {"usernames": ["b@example.com", "b@example.com"]}}, "Duplicate value"],
    ]);
    assert_refused(refused, async |name, spec| {
        create(&cluster, name, spec).await.map(drop)
    })
    .await;
    cluster.cleanup().await;
}

#[tokio::test]
async fn only_plain_addresses_are_admitted() {
    // One mailbox in two spellings is refused by the CRD's pattern on both address fields
    // (`format: email` alone admits most of these on kube-apiserver: Go's `net/mail`).
    let Some(cluster) = admission_cluster().await else {
        return;
    };
    let plain = "should match";
    let addresses = [
        "Alice <alice@example.com>",
        "<alice@example.com>",
        "alice@example.com(work)",
        "\"alice\"@example.com",
        "@relay.example.com:alice@example.com",
        "alice@example.com.",
        "al..ice@example.com",
        "alice@localhost",
        "\u{e4}lice@example.com",
    ];
    for (i, address) in addresses.into_iter().enumerate() {
        let user = json!({"users": users(&[address])});
        let org = json!({"orgInvitation": {"usernames": [address]}});
        let (u, o) = (format!("u{i}"), format!("o{i}"));
        for (name, spec, field) in [(u, user, "emailAddress"), (o, org, "usernames")] {
            let message = create(&cluster, &name, spec).await.unwrap_err();
            // A real API server may refuse by `format: email` as well.
            let by_format = message.contains("must be of type email");
            assert!(
                (message.contains(plain) || by_format) && message.contains(field),
                "{address}: {message}"
            );
        }
    }
    // Case and plus-addressing are plain (the controller folds case; `+ops` is another person).
    let users = json!({"users": users(&["Alice@Example.COM", "alice+ops@example.com", "o'brien@example.co.uk"])});
    create(&cluster, "plain", users).await.unwrap();
    let org =
        json!({"orgInvitation": {"usernames": ["Bob@Example.COM", "bob+ops@xn--exmple-cua.com"]}});
    create(&cluster, "plain-org", org).await.unwrap();
    cluster.cleanup().await;
}

#[tokio::test]
async fn endpoints_are_validated_at_admission() {
    let Some(cluster) = admission_cluster().await else {
        return;
    };
    let api: Api<InvitationEndpoint> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    let endpoint = |name: &str, spec: Value| -> InvitationEndpoint {
        serde_json::from_value(json!({
            "apiVersion": "invite.operators.dev/v1alpha1", "kind": "InvitationEndpoint",
            "metadata": cluster.metadata(name), "spec": spec
        }))
        .unwrap()
    };
    let pp = PostParams::default();
    // [name, spec, what the refusal says]
    let refused = json!([
        ["org", {"api": "OrgInvitation", "url": "https://x.example.com", "credentials": {"secretRef": {"name": "t"}}}, "organizationId is required"],
        ["ns", {"api": "UserInvite", "url": "https://x.example.com", "credentials": {"secretRef": {"name": "t", "namespace": "elsewhere"}}}, "own namespace"],
        ["url", {"api": "UserInvite", "url": "ftp://x", "credentials": {"secretRef": {"name": "t"}}}, "url"],
    ]);
    assert_refused(refused, async |name, spec| {
        match api.create(&pp, &endpoint(name, spec)).await {
            Err(kube::Error::Api(s)) if s.code == 422 => Err(s.message),
            other => panic!("expected 422, got {other:?}"),
        }
    })
    .await;

    let ok = api
        .create(&pp, &endpoint("ok", json!({"api": "UserInvite", "url": "https://x.example.com", "credentials": {"secretRef": {"name": "t"}}})))
        .await
        .unwrap();
    assert_eq!(ok.spec.connection.requests_per_second, 50);
    assert_eq!(ok.spec.connection.credentials.secret_ref.key, "token");
    cluster.cleanup().await;
}

/// No CRD default creates a field a manifest did not write (in `spec` or inside its lists): a
/// GitOps tool comparing the manifest with the stored object (Argo CD's client-side diff) would
/// otherwise never see them in sync. Every resource of every example is created (in the test's
/// namespace; cluster-scoped ones under a unique name) and read back: its spec is exactly the
/// manifest's.
#[tokio::test]
async fn examples_are_stored_exactly_as_written() {
    let Some(cluster) = admission_cluster().await else {
        return;
    };
    let dir = crate::common::package_path("examples");
    let mut checked = 0;
    for file in std::fs::read_dir(&dir).unwrap() {
        let path = file.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let documents: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
        for mut document in documents.into_iter().filter(|d| !d.is_null()) {
            let kind = document["kind"].as_str().unwrap_or_default().to_string();
            let (resource, namespaced) = match kind.as_str() {
                "UserInvitation" => (ApiResource::erase::<UserInvitation>(&()), true),
                "InvitationEndpoint" => (ApiResource::erase::<InvitationEndpoint>(&()), true),
                "ClusterInvitationEndpoint" => {
                    (ApiResource::erase::<ClusterInvitationEndpoint>(&()), false)
                }
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
            let api: Api<DynamicObject> = if namespaced {
                Api::namespaced_with(cluster.client.clone(), &cluster.namespace, &resource)
            } else {
                Api::all_with(cluster.client.clone(), &resource)
            };
            let object: DynamicObject = serde_json::from_value(document.clone()).unwrap();
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
