//! Drives the test apiserver with a real `kube::Client` and kube-runtime.

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ObjectReference, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, PropagationPolicy, WatchEvent,
    WatchParams,
};
use kube::core::{PartialObjectMeta, Status};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{CustomResource, CustomResourceExt, KubeSchema, ResourceExt};
use kube_test_apiserver::{Fault, TestApiServer};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::time::Duration;

#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "test.kube-apiserver.dev",
    version = "v1",
    kind = "Widget",
    namespaced,
    status = "WidgetStatus",
    shortname = "wd",
    category = "testing"
)]
#[x_kube(validation = Rule::new("self.replicas <= 10").message("replicas must be at most 10"))]
#[serde(rename_all = "camelCase")]
pub struct WidgetSpec {
    #[schemars(email)]
    pub owner: String,
    #[serde(default = "default_size")]
    pub size: String,
    #[serde(default)]
    pub replicas: i32,
    #[x_kube(merge_strategy = ListMerge::Set)]
    #[serde(default)]
    pub tags: Vec<String>,
    #[x_kube(merge_strategy = ListMerge::Map(vec!["email".into()]))]
    #[serde(default)]
    pub users: Vec<WidgetUser>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

fn default_size() -> String {
    "medium".into()
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WidgetUser {
    pub email: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WidgetStatus {
    #[serde(default)]
    pub ready: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

const T: Duration = Duration::from_secs(5);

async fn with_crd() -> (TestApiServer, kube::Client) {
    let server = TestApiServer::start().await;
    let client = server.client();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), &Widget::crd())
        .await
        .unwrap();
    let established = kube::runtime::wait::await_condition(
        crds,
        "widgets.test.kube-apiserver.dev",
        kube::runtime::wait::conditions::is_crd_established(),
    );
    tokio::time::timeout(T, established).await.unwrap().unwrap();
    (server, client)
}

fn widget(name: &str) -> Widget {
    Widget::new(
        name,
        WidgetSpec {
            owner: "a@example.com".into(),
            size: "small".into(),
            replicas: 1,
            ..Default::default()
        },
    )
}

fn api_err(e: kube::Error) -> Status {
    match e {
        kube::Error::Api(s) => *s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// The real apiserver's answer to a JSON patch it cannot apply (checked against
/// kube-apiserver 1.28): `{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",
/// "message":"the server rejected our request due to an error in our request",
/// "reason":"Invalid","details":{},"code":422}`.
fn assert_json_patch_failed(e: &Status) {
    assert_eq!(e.code, 422, "{e:?}");
    assert_eq!(e.reason, "Invalid", "{e:?}");
    assert_eq!(
        e.message, "the server rejected our request due to an error in our request",
        "{e:?}"
    );
    let details = e.details.as_ref().expect("details: {}");
    assert!(
        details.causes.is_empty() && details.name.is_empty() && details.kind.is_empty(),
        "{e:?}"
    );
}

fn cm(name: &str) -> ConfigMap {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "labels": {"app": "demo"}},
        "data": {"k": "v"}
    }))
    .unwrap()
}

#[tokio::test]
async fn configmap_crud_and_errors() {
    let server = TestApiServer::start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(server.client());
    let created = api
        .create(&PostParams::default(), &cm("one"))
        .await
        .unwrap();
    assert!(created.metadata.uid.is_some());
    assert!(created.metadata.creation_timestamp.is_some());
    assert_eq!(
        created.metadata.generation, None,
        "configmaps carry no generation"
    );
    let rv1: u64 = created.resource_version().unwrap().parse().unwrap();

    let got = api.get("one").await.unwrap();
    assert_eq!(got.data.unwrap()["k"], "v");

    let e = api_err(
        api.create(&PostParams::default(), &cm("one"))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 409);
    assert_eq!(e.reason, "AlreadyExists");
    assert_eq!(e.message, "configmaps \"one\" already exists");

    let mut upd = created.clone();
    upd.data = Some([("k".to_string(), "w".to_string())].into());
    let replaced = api
        .replace("one", &PostParams::default(), &upd)
        .await
        .unwrap();
    let rv2: u64 = replaced.resource_version().unwrap().parse().unwrap();
    assert!(rv2 > rv1);

    // No-op replace: resourceVersion unchanged.
    let same = api
        .replace("one", &PostParams::default(), &replaced)
        .await
        .unwrap();
    assert_eq!(same.resource_version(), replaced.resource_version());

    let list = api.list(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.len(), 1);
    assert!(list.metadata.resource_version.is_some());

    api.delete("one", &DeleteParams::default()).await.unwrap();
    let e = api_err(api.get("one").await.unwrap_err());
    assert_eq!(e.code, 404);
    assert_eq!(e.message, "configmaps \"one\" not found");

    // Missing namespace.
    let other: Api<ConfigMap> = Api::namespaced(server.client(), "nope");
    let e = api_err(
        other
            .create(&PostParams::default(), &cm("x"))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (e.code, e.message.as_str()),
        (404, "namespaces \"nope\" not found")
    );

    // Invalid label value.
    let mut bad = cm("bad");
    bad.metadata.labels = Some([("email".to_string(), "a@b.c".to_string())].into());
    let e = api_err(api.create(&PostParams::default(), &bad).await.unwrap_err());
    assert_eq!(e.code, 422);
    assert!(
        e.message
            .starts_with("ConfigMap \"bad\" is invalid: metadata.labels: Invalid value: \"a@b.c\"")
    );

    // Bad JSON.
    let req = axum::http::Request::post("/api/v1/namespaces/default/configmaps")
        .header("content-type", "application/json")
        .body(b"{not json".to_vec())
        .unwrap();
    let e = server.client().request::<ConfigMap>(req).await.unwrap_err();
    assert_eq!(api_err(e).code, 400);

    // Unknown resource.
    let req = axum::http::Request::get("/apis/nope.dev/v1/things")
        .body(vec![])
        .unwrap();
    let e = server
        .client()
        .request::<serde_json::Value>(req)
        .await
        .unwrap_err();
    assert_eq!(api_err(e).code, 404);
}

#[tokio::test]
async fn stale_replace_and_lease_conflicts() {
    let server = TestApiServer::start().await;
    let leases: Api<Lease> = Api::default_namespaced(server.client());
    let lease: Lease = serde_json::from_value(json!({
        "metadata": {"name": "leader"},
        "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15}
    }))
    .unwrap();
    let l1 = leases.create(&PostParams::default(), &lease).await.unwrap();
    let mut a = l1.clone();
    a.spec.as_mut().unwrap().holder_identity = Some("b".into());
    leases
        .replace("leader", &PostParams::default(), &a)
        .await
        .unwrap();
    let mut stale = l1.clone();
    stale.spec.as_mut().unwrap().holder_identity = Some("c".into());
    let e = api_err(
        leases
            .replace("leader", &PostParams::default(), &stale)
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 409);
    assert_eq!(e.reason, "Conflict");
    assert_eq!(
        e.message,
        "Operation cannot be fulfilled on leases.coordination.k8s.io \"leader\": the object has been modified; please apply your changes to the latest version and try again"
    );
    // PUT creates leases (AllowCreateOnUpdate).
    let mut fresh = lease.clone();
    fresh.metadata.name = Some("other".into());
    leases
        .replace("other", &PostParams::default(), &fresh)
        .await
        .unwrap();
    // Invalid duration.
    let mut bad = lease.clone();
    bad.metadata.name = Some("bad".into());
    bad.spec.as_mut().unwrap().lease_duration_seconds = Some(0);
    assert_eq!(
        api_err(
            leases
                .create(&PostParams::default(), &bad)
                .await
                .unwrap_err()
        )
        .code,
        422
    );
}

#[tokio::test]
async fn merge_patch_resource_version_precondition() {
    let (_server, client) = with_crd().await;
    let api: Api<Widget> = Api::default_namespaced(client);
    let w = api
        .create(&PostParams::default(), &widget("w"))
        .await
        .unwrap();
    let rv = w.resource_version().unwrap();
    let p = json!({"metadata": {"resourceVersion": rv}, "spec": {"replicas": 2}});
    let w2 = api
        .patch("w", &PatchParams::default(), &Patch::Merge(&p))
        .await
        .unwrap();
    assert_eq!(w2.spec.replicas, 2);
    let p = json!({"metadata": {"resourceVersion": rv}, "spec": {"replicas": 3}});
    let e = api_err(
        api.patch("w", &PatchParams::default(), &Patch::Merge(&p))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 409);
    assert_eq!(
        e.message,
        "Operation cannot be fulfilled on widgets.test.kube-apiserver.dev \"w\": the object has been modified; please apply your changes to the latest version and try again"
    );
    // Strategic merge patch is not supported for custom resources.
    let e = api_err(
        api.patch(
            "w",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"replicas": 4}})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(e.code, 415);
}

#[tokio::test]
async fn json_patch_test_operations() {
    let server = TestApiServer::start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(server.client());
    api.create(&PostParams::default(), &cm("jp")).await.unwrap();
    let patch = |v: serde_json::Value| Patch::<()>::Json(serde_json::from_value(v).unwrap());
    // test passes -> replace applies
    let ok = api
        .patch(
            "jp",
            &PatchParams::default(),
            &patch(json!([{"op": "test", "path": "/data/k", "value": "v"}, {"op": "replace", "path": "/data/k", "value": "x"}])),
        )
        .await
        .unwrap();
    assert_eq!(ok.data.unwrap()["k"], "x");
    // test fails -> 422, nothing changes
    let e = api_err(
        api.patch(
            "jp",
            &PatchParams::default(),
            &patch(json!([{"op": "test", "path": "/data/k", "value": "nope"}, {"op": "replace", "path": "/data/k", "value": "y"}])),
        )
        .await
        .unwrap_err(),
    );
    assert_json_patch_failed(&e);
    assert_eq!(api.get("jp").await.unwrap().data.unwrap()["k"], "x");
    // any operation that cannot be applied is answered the same way
    let e = api_err(
        api.patch(
            "jp",
            &PatchParams::default(),
            &patch(json!([{"op": "remove", "path": "/metadata/labels/nope"}])),
        )
        .await
        .unwrap_err(),
    );
    assert_json_patch_failed(&e);
    // test for null passes when the field is missing (apiserver quirk)
    let ok = api
        .patch(
            "jp",
            &PatchParams::default(),
            &patch(json!([
                {"op": "test", "path": "/metadata/finalizers", "value": null},
                {"op": "add", "path": "/metadata/finalizers", "value": ["example.com/f"]}
            ])),
        )
        .await
        .unwrap();
    assert_eq!(ok.finalizers(), ["example.com/f"]);
    // ... but not when the field is present
    let e = api_err(
        api.patch(
            "jp",
            &PatchParams::default(),
            &patch(json!([
                {"op": "test", "path": "/metadata/finalizers", "value": null},
                {"op": "add", "path": "/metadata/finalizers", "value": ["example.com/g"]}
            ])),
        )
        .await
        .unwrap_err(),
    );
    assert_json_patch_failed(&e);
}

#[tokio::test]
async fn status_subresource_and_generation() {
    let (_server, client) = with_crd().await;
    let api: Api<Widget> = Api::default_namespaced(client);
    let mut w = widget("g");
    w.status = Some(WidgetStatus {
        ready: true,
        observed_generation: Some(9),
    });
    let w = api.create(&PostParams::default(), &w).await.unwrap();
    assert_eq!(w.metadata.generation, Some(1));
    assert_eq!(
        w.status, None,
        "create drops status when the status subresource is enabled"
    );

    // Status patch: only status changes, generation stays.
    let s = api
        .patch_status(
            "g",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 5}, "metadata": {"labels": {"x": "y"}}, "status": {"ready": true}})),
        )
        .await
        .unwrap();
    assert!(s.status.as_ref().unwrap().ready);
    assert_eq!(s.spec.replicas, 1);
    assert!(s.labels().get("x").is_none());
    assert_eq!(s.metadata.generation, Some(1));

    // Main resource write ignores status, bumps generation for spec changes.
    let m = api
        .patch(
            "g",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 2}, "status": {"ready": false}})),
        )
        .await
        .unwrap();
    assert_eq!(m.spec.replicas, 2);
    assert!(m.status.as_ref().unwrap().ready);
    assert_eq!(m.metadata.generation, Some(2));

    // Metadata-only change: no generation bump.
    let l = api
        .patch(
            "g",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"a": "b"}}})),
        )
        .await
        .unwrap();
    assert_eq!(l.metadata.generation, Some(2));
    assert_ne!(l.resource_version(), m.resource_version());

    // No-op patch: resourceVersion unchanged.
    let n = api
        .patch(
            "g",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 2}})),
        )
        .await
        .unwrap();
    assert_eq!(n.resource_version(), l.resource_version());

    // replace_status with a stale resourceVersion -> 409
    let mut stale = w.clone();
    stale.status = Some(WidgetStatus::default());
    let e = api_err(
        api.replace_status("g", &PostParams::default(), &stale)
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 409);
    // Status is validated against the schema too.
    let e = api_err(
        api.patch_status(
            "g",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"ready": "yes"}})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(e.code, 422);
    assert!(e.message.contains("status.ready"), "{}", e.message);
}

#[tokio::test]
async fn finalizer_deletion_flow() {
    let (_server, client) = with_crd().await;
    let api: Api<Widget> = Api::default_namespaced(client.clone());
    let mut w = widget("f");
    w.metadata.finalizers = Some(vec!["test.dev/cleanup".into()]);
    api.create(&PostParams::default(), &w).await.unwrap();

    let mut events = api
        .watch(&WatchParams::default().fields("metadata.name=f"), "0")
        .await
        .unwrap()
        .boxed();
    assert!(matches!(
        events.try_next().await.unwrap(),
        Some(WatchEvent::Added(_))
    ));

    let deleted = api.delete("f", &DeleteParams::default()).await.unwrap();
    let obj = deleted
        .left()
        .expect("object returned while finalizers remain");
    assert!(obj.metadata.deletion_timestamp.is_some());
    assert_eq!(obj.metadata.generation, Some(2));
    match events.try_next().await.unwrap() {
        Some(WatchEvent::Modified(o)) => assert!(o.metadata.deletion_timestamp.is_some()),
        other => panic!("unexpected {other:?}"),
    }
    // Adding a new finalizer while deleting is refused.
    let e = api_err(
        api.patch(
            "f",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"finalizers": ["test.dev/cleanup", "test.dev/other"]}}),
            ),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(e.code, 422);
    assert!(
        e.message
            .contains("no new finalizers can be added if the object is being deleted")
    );

    // Removing the last finalizer deletes the object.
    api.patch(
        "f",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    assert!(matches!(
        events.try_next().await.unwrap(),
        Some(WatchEvent::Deleted(_))
    ));
    assert_eq!(api_err(api.get("f").await.unwrap_err()).code, 404);

    // Delete preconditions.
    let w = api
        .create(&PostParams::default(), &widget("p"))
        .await
        .unwrap();
    let dp = DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid: Some("wrong".into()),
            resource_version: None,
        }),
        ..Default::default()
    };
    assert_eq!(api_err(api.delete("p", &dp).await.unwrap_err()).code, 409);
    let dp = DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid: w.metadata.uid.clone(),
            resource_version: w.metadata.resource_version.clone(),
        }),
        propagation_policy: Some(PropagationPolicy::Background),
        ..Default::default()
    };
    api.delete("p", &dp).await.unwrap();
}

#[tokio::test]
async fn kube_runtime_finalizer_helper() {
    use kube::runtime::controller::Action;
    use kube::runtime::finalizer::{Event, finalizer};
    use std::sync::Arc;
    let (_server, client) = with_crd().await;
    let api: Api<Widget> = Api::default_namespaced(client);
    api.create(&PostParams::default(), &widget("h"))
        .await
        .unwrap();
    let run = |api: Api<Widget>| async move {
        let obj = Arc::new(api.get("h").await.unwrap());
        finalizer(&api, "test.dev/fin", obj, |ev| async move {
            match ev {
                Event::Apply(_) | Event::Cleanup(_) => {
                    Ok::<_, std::convert::Infallible>(Action::await_change())
                }
            }
        })
        .await
        .unwrap();
    };
    run(api.clone()).await; // adds the finalizer (JSON patch with test null)
    assert_eq!(api.get("h").await.unwrap().finalizers(), ["test.dev/fin"]);
    run(api.clone()).await; // apply
    api.delete("h", &DeleteParams::default()).await.unwrap();
    run(api.clone()).await; // cleanup removes the finalizer -> deleted
    assert_eq!(api_err(api.get("h").await.unwrap_err()).code, 404);
}

#[tokio::test]
async fn watch_bookmarks_and_expiry() {
    let server = TestApiServer::start().await;
    server.set_bookmark_interval(Duration::from_millis(50));
    let api: Api<ConfigMap> = Api::default_namespaced(server.client());
    let c = api.create(&PostParams::default(), &cm("w1")).await.unwrap();
    let rv = c.resource_version().unwrap();
    let mut s = api
        .watch(&WatchParams::default().timeout(10), &rv)
        .await
        .unwrap()
        .boxed();
    api.create(&PostParams::default(), &cm("w2")).await.unwrap();
    api.patch(
        "w2",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "z"}})),
    )
    .await
    .unwrap();
    api.delete("w2", &DeleteParams::default()).await.unwrap();
    let mut seen = vec![];
    while seen.len() < 4 {
        match tokio::time::timeout(T, s.try_next())
            .await
            .unwrap()
            .unwrap()
        {
            Some(WatchEvent::Added(o)) => seen.push(format!("ADDED {}", o.name_any())),
            Some(WatchEvent::Modified(o)) => seen.push(format!("MODIFIED {}", o.name_any())),
            Some(WatchEvent::Deleted(o)) => seen.push(format!("DELETED {}", o.name_any())),
            Some(WatchEvent::Bookmark(b)) => {
                if seen.len() == 3 {
                    assert!(!b.metadata.resource_version.is_empty());
                    seen.push("BOOKMARK".into());
                }
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(seen, ["ADDED w2", "MODIFIED w2", "DELETED w2", "BOOKMARK"]);

    // Compaction: resuming from an old revision answers 410 Expired.
    server.compact_history();
    let mut s = api
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    match s.try_next().await.unwrap() {
        Some(WatchEvent::Error(e)) => {
            assert_eq!(e.code, 410);
            assert_eq!(e.reason, "Expired");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(s.try_next().await.unwrap().is_none());

    // timeoutSeconds ends the stream.
    let mut s = api
        .watch(
            &WatchParams::default().timeout(1),
            &server.resource_version().to_string(),
        )
        .await
        .unwrap()
        .boxed();
    let drain = async {
        while let Some(ev) = s.try_next().await.unwrap() {
            assert!(
                matches!(ev, WatchEvent::Bookmark(_)),
                "only bookmarks expected"
            );
        }
    };
    tokio::time::timeout(Duration::from_secs(3), drain)
        .await
        .expect("stream ended by timeoutSeconds");

    // Label-filtered watches see objects leave the selection as DELETED.
    let mut s = api
        .watch(
            &WatchParams::default().labels("app=demo"),
            &server.resource_version().to_string(),
        )
        .await
        .unwrap()
        .boxed();
    api.create(&PostParams::default(), &cm("w3")).await.unwrap();
    api.patch(
        "w3",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "other"}}})),
    )
    .await
    .unwrap();
    assert!(matches!(
        s.try_next().await.unwrap(),
        Some(WatchEvent::Added(_))
    ));
    assert!(matches!(
        s.try_next().await.unwrap(),
        Some(WatchEvent::Deleted(_))
    ));
}

#[tokio::test]
async fn watcher_relists_after_410_and_reflector_stays_in_sync() {
    let server = TestApiServer::start().await;
    server.set_bookmark_interval(Duration::from_millis(50));
    let api: Api<ConfigMap> = Api::default_namespaced(server.client());
    for i in 0..3 {
        api.create(&PostParams::default(), &cm(&format!("r{i}")))
            .await
            .unwrap();
    }
    let (reader, writer) = reflector::store();
    let stream = reflector(
        writer,
        watcher(api.clone(), watcher::Config::default().page_size(2)),
    )
    .applied_objects()
    .boxed();
    let handle = tokio::spawn(async move {
        let mut stream = stream;
        while stream.next().await.is_some() {}
    });
    tokio::time::timeout(T, reader.wait_until_ready())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reader.state().len(), 3);

    // Make the watcher's resourceVersion too old, then force a re-watch.
    api.create(&PostParams::default(), &cm("r3")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    server.compact_history();
    server.close_watches();
    api.delete("r0", &DeleteParams::default()).await.unwrap();
    api.create(&PostParams::default(), &cm("r4")).await.unwrap();
    let wait = async {
        loop {
            let mut names: Vec<String> = reader.state().iter().map(|o| o.name_any()).collect();
            names.sort();
            if names == ["r1", "r2", "r3", "r4"] {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(T, wait)
        .await
        .expect("reflector converged");
    // The watcher listed with pages of 2 (limit + continue).
    let lists = server
        .requests()
        .iter()
        .filter(|r| r.verb == "list" && r.resource == "configmaps")
        .count();
    assert!(lists >= 2, "paginated lists: {lists}");
    handle.abort();
}

#[tokio::test]
async fn streaming_list_and_metadata_watcher() {
    let server = TestApiServer::start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(server.client());
    api.create(&PostParams::default(), &cm("s1")).await.unwrap();
    let mut events = watcher(api.clone(), watcher::Config::default().streaming_lists()).boxed();
    let mut init = vec![];
    loop {
        match tokio::time::timeout(T, events.try_next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            watcher::Event::Init => {}
            watcher::Event::InitApply(o) => init.push(o.name_any()),
            watcher::Event::InitDone => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(init, ["s1"]);
    api.create(&PostParams::default(), &cm("s2")).await.unwrap();
    match tokio::time::timeout(T, events.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap()
    {
        watcher::Event::Apply(o) => assert_eq!(o.name_any(), "s2"),
        other => panic!("unexpected {other:?}"),
    }

    // metadata_watcher uses PartialObjectMetadata lists and watches.
    let meta_api: Api<PartialObjectMeta<ConfigMap>> = Api::default_namespaced(server.client());
    let mut meta = watcher(meta_api, watcher::Config::default())
        .applied_objects()
        .boxed();
    let first: PartialObjectMeta<ConfigMap> = tokio::time::timeout(T, meta.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(first.metadata.name.is_some());
    assert_eq!(first.types.as_ref().unwrap().kind, "PartialObjectMetadata");
    let listed = api.list_metadata(&ListParams::default()).await.unwrap();
    assert_eq!(listed.items.len(), 2);
    assert_eq!(listed.types.kind, "PartialObjectMetadataList");
    let one = api.get_metadata("s1").await.unwrap();
    assert_eq!(one.metadata.name.as_deref(), Some("s1"));
}

#[tokio::test]
async fn recorder_publishes_events() {
    use kube::runtime::events::{Event, EventType, Recorder, Reporter};
    let server = TestApiServer::start().await;
    let client = server.client();
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let c = cms.create(&PostParams::default(), &cm("ev")).await.unwrap();
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "test-controller".into(),
            instance: Some("pod-1".into()),
        },
    );
    let reference = ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("ConfigMap".into()),
        name: c.metadata.name.clone(),
        namespace: c.metadata.namespace.clone(),
        uid: c.metadata.uid.clone(),
        ..Default::default()
    };
    let ev = Event {
        type_: EventType::Normal,
        reason: "Tested".into(),
        note: Some("hello".into()),
        action: "Test".into(),
        secondary: None,
    };
    recorder.publish(&ev, &reference).await.unwrap();
    recorder.publish(&ev, &reference).await.unwrap(); // second one patches the series
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::default_namespaced(client);
    let list = events.list(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.len(), 1);
    let e = &list.items[0];
    assert_eq!(e.reason.as_deref(), Some("Tested"));
    assert_eq!(e.series.as_ref().map(|s| s.count), Some(2));
    let verbs: Vec<(String, String)> = server
        .requests()
        .into_iter()
        .filter(|r| r.resource == "events")
        .map(|r| (r.verb, r.api_group))
        .collect();
    assert!(verbs.contains(&("create".into(), "events.k8s.io".into())));
    assert!(verbs.contains(&("patch".into(), "events.k8s.io".into())));
}

#[tokio::test]
async fn pagination_and_selectors() {
    let server = TestApiServer::start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(server.client());
    for i in 0..7 {
        let mut c = cm(&format!("p{i}"));
        c.metadata.labels = Some(
            [
                (
                    "tier".to_string(),
                    if i % 2 == 0 { "even" } else { "odd" }.to_string(),
                ),
                ("idx".to_string(), i.to_string()),
            ]
            .into(),
        );
        api.create(&PostParams::default(), &c).await.unwrap();
    }
    let mut names = vec![];
    let mut lp = ListParams::default().limit(3);
    let mut pages = 0;
    loop {
        let page = api.list(&lp).await.unwrap();
        pages += 1;
        names.extend(page.items.iter().map(|o| o.name_any()));
        match page.metadata.continue_ {
            Some(c) if !c.is_empty() => lp = lp.continue_token(&c),
            _ => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(names, ["p0", "p1", "p2", "p3", "p4", "p5", "p6"]);

    let count = |sel: &'static str| {
        let api = api.clone();
        async move {
            api.list(&ListParams::default().labels(sel))
                .await
                .unwrap()
                .items
                .len()
        }
    };
    assert_eq!(count("tier=even").await, 4);
    assert_eq!(count("tier!=even").await, 3);
    assert_eq!(count("tier==odd,idx in (1,3,4)").await, 2);
    assert_eq!(count("idx notin (0,1)").await, 5);
    assert_eq!(count("tier").await, 7);
    assert_eq!(count("!tier").await, 0);
    assert_eq!(count("idx>4").await, 2);
    let f = api
        .list(&ListParams::default().fields("metadata.name=p3"))
        .await
        .unwrap();
    assert_eq!(f.items.len(), 1);
    let f = api
        .list(&ListParams::default().fields("metadata.name!=p3"))
        .await
        .unwrap();
    assert_eq!(f.items.len(), 6);
    let e = api_err(
        api.list(&ListParams::default().fields("data.k=v"))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 400);
    let e = api_err(
        api.list(&ListParams::default().labels("a in ("))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 400);

    // Cluster-wide list of a namespaced resource.
    let all: Api<ConfigMap> = Api::all(server.client());
    assert_eq!(
        all.list(&ListParams::default()).await.unwrap().items.len(),
        7
    );
    // deletecollection
    api.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels("tier=odd"),
    )
    .await
    .unwrap();
    assert_eq!(
        api.list(&ListParams::default()).await.unwrap().items.len(),
        4
    );
    assert!(
        server
            .requests()
            .iter()
            .any(|r| r.verb == "deletecollection")
    );
}

#[tokio::test]
async fn schema_validation_defaulting_and_cel() {
    let (_server, client) = with_crd().await;
    let api: Api<Widget> = Api::default_namespaced(client);
    let raw = |v: serde_json::Value| {
        let mut o: Widget = serde_json::from_value(json!({
            "apiVersion": "test.kube-apiserver.dev/v1", "kind": "Widget",
            "metadata": {"name": "x"}, "spec": {"owner": "a@example.com"}
        }))
        .unwrap();
        o.spec = serde_json::from_value(v).unwrap();
        o
    };
    // Defaulting + pruning of unknown fields.
    let mut w = serde_json::to_value(widget("d")).unwrap();
    w["spec"].as_object_mut().unwrap().remove("size");
    w["spec"]["unknownField"] = json!(1);
    let dyn_api: Api<kube::api::DynamicObject> = Api::default_namespaced_with(
        api.clone().into_client(),
        &kube::api::ApiResource::erase::<Widget>(&()),
    );
    let created = dyn_api
        .create(&PostParams::default(), &serde_json::from_value(w).unwrap())
        .await
        .unwrap();
    assert_eq!(created.data["spec"]["size"], "medium");
    assert!(created.data["spec"].get("unknownField").is_none());

    // CEL rule.
    let e = api_err(
        api.create(
            &PostParams::default(),
            &raw(json!({"owner": "a@example.com", "replicas": 11})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(e.code, 422);
    assert_eq!(e.reason, "Invalid");
    assert_eq!(
        e.message,
        "Widget.test.kube-apiserver.dev \"x\" is invalid: spec: Invalid value: \"object\": replicas must be at most 10"
    );

    // Duplicate in a set list and in a map list.
    let e = api_err(
        api.create(
            &PostParams::default(),
            &raw(json!({"owner": "a@example.com", "tags": ["a", "b", "a"]})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(
        e.message,
        "Widget.test.kube-apiserver.dev \"x\" is invalid: spec.tags[2]: Duplicate value: \"a\""
    );
    let e = api_err(
        api.create(
            &PostParams::default(),
            &raw(json!({"owner": "a@example.com", "users": [{"email": "a@example.com"}, {"email": "a@example.com", "role": "x"}]})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(
        e.message,
        "Widget.test.kube-apiserver.dev \"x\" is invalid: spec.users[1]: Duplicate value: {\"email\":\"a@example.com\"}"
    );

    // Format and type errors.
    let e = api_err(
        api.create(
            &PostParams::default(),
            &raw(json!({"owner": "not-an-email"})),
        )
        .await
        .unwrap_err(),
    );
    assert!(
        e.message.contains(
            "spec.owner: Invalid value: \"not-an-email\": spec.owner in body must be of type email"
        ),
        "{}",
        e.message
    );
    let mut bad = serde_json::to_value(widget("t")).unwrap();
    bad["spec"]["replicas"] = json!("three");
    let e = api_err(
        dyn_api
            .create(
                &PostParams::default(),
                &serde_json::from_value(bad).unwrap(),
            )
            .await
            .unwrap_err(),
    );
    assert!(
        e.message
            .contains("spec.replicas in body must be of type integer: \"string\""),
        "{}",
        e.message
    );
    let mut missing = serde_json::to_value(widget("m")).unwrap();
    missing["spec"].as_object_mut().unwrap().remove("owner");
    let e = api_err(
        dyn_api
            .create(
                &PostParams::default(),
                &serde_json::from_value(missing).unwrap(),
            )
            .await
            .unwrap_err(),
    );
    assert!(
        e.message.contains("spec.owner: Required value"),
        "{}",
        e.message
    );
}

#[tokio::test]
async fn server_side_apply() {
    let (_server, client) = with_crd().await;
    let api: Api<Widget> = Api::default_namespaced(client);
    let pp = PatchParams::apply("mgr-a");
    // Apply creates.
    let cfg = json!({
        "apiVersion": "test.kube-apiserver.dev/v1", "kind": "Widget",
        "metadata": {"name": "s", "labels": {"a": "1"}},
        "spec": {"owner": "a@example.com", "replicas": 1, "note": "hello", "tags": ["x"]}
    });
    let w = api.patch("s", &pp, &Patch::Apply(&cfg)).await.unwrap();
    assert_eq!(w.spec.note.as_deref(), Some("hello"));
    assert_eq!(w.metadata.generation, Some(1));
    let mf = w.metadata.managed_fields.as_ref().unwrap();
    assert_eq!(mf[0].manager.as_deref(), Some("mgr-a"));
    assert_eq!(mf[0].operation.as_deref(), Some("Apply"));

    // Re-applying the same config is a no-op.
    let again = api.patch("s", &pp, &Patch::Apply(&cfg)).await.unwrap();
    assert_eq!(again.resource_version(), w.resource_version());

    // Omitting a field the manager applied before removes it.
    let cfg2 = json!({
        "apiVersion": "test.kube-apiserver.dev/v1", "kind": "Widget",
        "metadata": {"name": "s"},
        "spec": {"owner": "a@example.com", "replicas": 2, "tags": ["x"]}
    });
    let w2 = api.patch("s", &pp, &Patch::Apply(&cfg2)).await.unwrap();
    assert_eq!(w2.spec.note, None);
    assert_eq!(w2.spec.replicas, 2);
    assert!(w2.labels().get("a").is_none());
    assert_eq!(w2.metadata.generation, Some(2));

    // Another manager changing an owned field conflicts unless forced.
    let other = json!({
        "apiVersion": "test.kube-apiserver.dev/v1", "kind": "Widget",
        "metadata": {"name": "s"}, "spec": {"owner": "a@example.com", "replicas": 3}
    });
    let e = api_err(
        api.patch("s", &PatchParams::apply("mgr-b"), &Patch::Apply(&other))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 409);
    assert_eq!(
        e.message,
        "Apply failed with 1 conflict: conflict with \"mgr-a\" using test.kube-apiserver.dev/v1: .spec.replicas"
    );
    let forced = api
        .patch(
            "s",
            &PatchParams::apply("mgr-b").force(),
            &Patch::Apply(&other),
        )
        .await
        .unwrap();
    assert_eq!(forced.spec.replicas, 3);
    // Set-typed lists merge between managers.
    let tags = json!({
        "apiVersion": "test.kube-apiserver.dev/v1", "kind": "Widget",
        "metadata": {"name": "s"}, "spec": {"tags": ["y"]}
    });
    let t = api
        .patch("s", &PatchParams::apply("mgr-c"), &Patch::Apply(&tags))
        .await
        .unwrap();
    assert_eq!(t.spec.tags, ["x", "y"]);
    // Apply to status only touches status.
    let st = json!({
        "apiVersion": "test.kube-apiserver.dev/v1", "kind": "Widget",
        "metadata": {"name": "s"}, "status": {"ready": true}
    });
    let s = api
        .patch_status("s", &PatchParams::apply("mgr-a"), &Patch::Apply(&st))
        .await
        .unwrap();
    assert!(s.status.unwrap().ready);
    // fieldManager is required.
    let e = api_err(
        api.patch("s", &PatchParams::default(), &Patch::Apply(&cfg2))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 422);
}

#[tokio::test]
async fn namespaces_faults_and_request_log() {
    let server = TestApiServer::start().await;
    let client = server.client();
    let nss: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace =
        serde_json::from_value(json!({"metadata": {"name": "team-a", "labels": {"team": "a"}}}))
            .unwrap();
    let created = nss.create(&PostParams::default(), &ns).await.unwrap();
    assert_eq!(created.labels()["kubernetes.io/metadata.name"], "team-a");
    assert_eq!(created.status.unwrap().phase.as_deref(), Some("Active"));
    let listed = nss
        .list(&ListParams::default().labels("team=a"))
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 1);

    let secrets: Api<Secret> = Api::namespaced(client.clone(), "team-a");
    let s: Secret =
        serde_json::from_value(json!({"metadata": {"name": "s"}, "stringData": {"token": "abc"}}))
            .unwrap();
    let s = secrets.create(&PostParams::default(), &s).await.unwrap();
    assert_eq!(s.data.unwrap()["token"].0, b"abc");
    assert!(s.string_data.is_none());

    nss.delete("team-a", &DeleteParams::default())
        .await
        .unwrap();
    assert_eq!(api_err(secrets.get("s").await.unwrap_err()).code, 404);
    assert_eq!(api_err(nss.get("team-a").await.unwrap_err()).code, 404);
    assert_eq!(
        api_err(
            nss.delete("default", &DeleteParams::default())
                .await
                .unwrap_err()
        )
        .code,
        403
    );

    // Faults.
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    cms.create(&PostParams::default(), &cm("f")).await.unwrap();
    server.inject_fault(
        Fault::new(500)
            .verb("patch")
            .resource("configmaps")
            .times(1),
    );
    let p = Patch::Merge(json!({"data": {"k": "2"}}));
    let e = api_err(
        cms.patch("f", &PatchParams::default(), &p)
            .await
            .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (500, "InternalError"));
    cms.patch("f", &PatchParams::default(), &p).await.unwrap();
    server.inject_fault(Fault::new(409).verb("update").name("f"));
    let cur = cms.get("f").await.unwrap();
    let e = api_err(
        cms.replace("f", &PostParams::default(), &cur)
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 409);

    let reqs = server.requests();
    let patch = reqs.iter().find(|r| r.verb == "patch").unwrap();
    assert_eq!(patch.status, 500);
    assert_eq!(patch.resource, "configmaps");
    assert_eq!(patch.namespace.as_deref(), Some("default"));
    assert_eq!(patch.name.as_deref(), Some("f"));
    assert!(
        reqs.iter()
            .any(|r| r.verb == "delete" && r.resource == "namespaces")
    );
    server.clear_requests();
    assert!(server.requests().is_empty());
}

#[tokio::test]
async fn discovery_and_crd_lifecycle() {
    let (server, client) = with_crd().await;
    let discovery = kube::discovery::Discovery::new(client.clone())
        .run()
        .await
        .unwrap();
    let (ar, caps) = discovery
        .groups()
        .flat_map(|g| g.recommended_resources())
        .find(|(ar, _)| ar.kind == "Widget")
        .expect("Widget discovered");
    assert_eq!(ar.plural, "widgets");
    assert_eq!(caps.scope, kube::discovery::Scope::Namespaced);
    assert!(caps.subresources.iter().any(|(s, _)| s.plural == "status"));
    let agg = kube::discovery::Discovery::new(client.clone())
        .run_aggregated()
        .await
        .unwrap();
    assert!(agg.groups().any(|g| g.name() == "coordination.k8s.io"));
    let v = client.apiserver_version().await.unwrap();
    assert_eq!(v.major, "1");

    // Deleting the CRD removes instances (after their finalizers) and stops serving.
    let api: Api<Widget> = Api::default_namespaced(client.clone());
    let mut w = widget("l");
    w.metadata.finalizers = Some(vec!["test.dev/x".into()]);
    api.create(&PostParams::default(), &w).await.unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.delete("widgets.test.kube-apiserver.dev", &DeleteParams::default())
        .await
        .unwrap();
    let l = api.get("l").await.unwrap();
    assert!(l.metadata.deletion_timestamp.is_some());
    assert_eq!(
        api_err(
            api.create(&PostParams::default(), &widget("new"))
                .await
                .unwrap_err()
        )
        .code,
        405
    );
    api.patch(
        "l",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    assert_eq!(
        api_err(
            crds.get("widgets.test.kube-apiserver.dev")
                .await
                .unwrap_err()
        )
        .code,
        404
    );
    assert_eq!(
        api_err(api.list(&ListParams::default()).await.unwrap_err()).code,
        404
    );
    server.shutdown().await;
}

#[tokio::test]
async fn controller_reconciles_against_the_server() {
    use kube::runtime::controller::{Action, Controller};
    use std::sync::Arc;
    let (server, client) = with_crd().await;
    let api: Api<Widget> = Api::default_namespaced(client.clone());
    api.create(&PostParams::default(), &widget("c1"))
        .await
        .unwrap();
    async fn reconcile(w: Arc<Widget>, api: Arc<Api<Widget>>) -> Result<Action, kube::Error> {
        let st = json!({"status": {"ready": true, "observedGeneration": w.metadata.generation}});
        api.patch_status(&w.name_any(), &PatchParams::default(), &Patch::Merge(&st))
            .await?;
        Ok(Action::await_change())
    }
    fn error_policy(_: Arc<Widget>, _: &kube::Error, _: Arc<Api<Widget>>) -> Action {
        Action::requeue(Duration::from_millis(50))
    }
    let ctl = tokio::spawn(
        Controller::new(api.clone(), watcher::Config::default())
            .run(reconcile, error_policy, Arc::new(api.clone()))
            .for_each(|_| async {}),
    );
    // A transient 503 on the status patch is retried (client retry / requeue).
    server.inject_fault(
        Fault::new(500)
            .verb("patch")
            .subresource(Some("status"))
            .times(1),
    );
    api.create(&PostParams::default(), &widget("c2"))
        .await
        .unwrap();
    let wait = async {
        loop {
            let mut ready = true;
            for n in ["c1", "c2"] {
                ready &= api
                    .get(n)
                    .await
                    .ok()
                    .and_then(|w| w.status)
                    .is_some_and(|s| s.ready && s.observed_generation == Some(1));
            }
            if ready {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(T, wait)
        .await
        .expect("controller reconciled");
    ctl.abort();
    let used: std::collections::BTreeSet<(String, String, Option<String>)> = server
        .requests()
        .into_iter()
        .filter(|r| r.resource == "widgets")
        .map(|r| (r.verb, r.resource, r.subresource))
        .collect();
    assert!(used.contains(&("list".into(), "widgets".into(), None)));
    assert!(used.contains(&("watch".into(), "widgets".into(), None)));
    assert!(used.contains(&("patch".into(), "widgets".into(), Some("status".into()))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_optimistic_updates() {
    let server = TestApiServer::start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(server.client());
    let mut c = cm("counter");
    c.data = Some([("n".to_string(), "0".to_string())].into());
    api.create(&PostParams::default(), &c).await.unwrap();
    let mut tasks = vec![];
    for _ in 0..10 {
        let api: Api<ConfigMap> = Api::default_namespaced(server.client());
        tasks.push(tokio::spawn(async move {
            loop {
                let mut cur = api.get("counter").await.unwrap();
                let n: u32 = cur.data.as_ref().unwrap()["n"].parse().unwrap();
                cur.data
                    .as_mut()
                    .unwrap()
                    .insert("n".into(), (n + 1).to_string());
                match api.replace("counter", &PostParams::default(), &cur).await {
                    Ok(_) => break,
                    Err(kube::Error::Api(s)) if s.code == 409 => continue,
                    Err(e) => panic!("{e}"),
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(api.get("counter").await.unwrap().data.unwrap()["n"], "10");
}

#[tokio::test]
async fn malformed_bodies_are_rejected_without_panics() {
    let server = TestApiServer::start().await;
    let client = server.client();
    let send = |method: &str, path: &str, ct: &str, body: &str| {
        let req = axum::http::Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", ct)
            .body(body.as_bytes().to_vec())
            .unwrap();
        let client = client.clone();
        async move {
            client
                .request::<serde_json::Value>(req)
                .await
                .map_err(api_err)
        }
    };
    let e = send(
        "POST",
        "/api/v1/namespaces",
        "application/json",
        r#"{"metadata":{"name":"x"},"spec":"bad"}"#,
    )
    .await
    .unwrap_err();
    assert_eq!(e.code, 400);
    let e = send(
        "POST",
        "/api/v1/namespaces/default/configmaps",
        "application/json",
        r#"{"metadata":"x"}"#,
    )
    .await
    .unwrap_err();
    assert_eq!(e.code, 400);
    let e = send(
        "POST",
        "/api/v1/namespaces/default/configmaps",
        "application/json",
        r#"[1,2]"#,
    )
    .await
    .unwrap_err();
    assert_eq!(e.code, 400);
    let e = send(
        "POST",
        "/api/v1/namespaces/default/configmaps",
        "application/json",
        r#"{"metadata":{"name":"c"},"data":{"k":1}}"#,
    )
    .await
    .unwrap_err();
    assert_eq!(e.code, 400);
    send(
        "POST",
        "/api/v1/namespaces/default/configmaps",
        "application/json",
        r#"{"metadata":{"name":"ok"}}"#,
    )
    .await
    .unwrap();
    let e = send(
        "PATCH",
        "/api/v1/namespaces/default/configmaps/ok",
        "application/json-patch+json",
        "{}",
    )
    .await
    .unwrap_err();
    assert_eq!(e.code, 400);
    let e = send(
        "PATCH",
        "/api/v1/namespaces/default/configmaps/ok",
        "text/plain",
        "{}",
    )
    .await
    .unwrap_err();
    assert_eq!(e.code, 415);
    let e = send(
        "PATCH",
        "/api/v1/namespaces/default/configmaps/ok?fieldManager=m",
        "application/apply-patch+yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: [1]\n",
    )
    .await
    .unwrap_err();
    assert_eq!(e.code, 400);
    // YAML apply bodies work.
    send(
        "PATCH",
        "/api/v1/namespaces/default/configmaps/ok?fieldManager=m",
        "application/apply-patch+yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ok\ndata:\n  a: b\n",
    )
    .await
    .unwrap();
    let e = send(
        "GET",
        "/api/v1/namespaces/default/configmaps?labelSelector=a%20in%20(",
        "application/json",
        "",
    )
    .await
    .unwrap_err();
    assert_eq!(e.code, 400);
    let e = send(
        "GET",
        "/api/v1/namespaces/default/configmaps?watch=true&resourceVersion=abc",
        "application/json",
        "",
    )
    .await
    .unwrap_err();
    assert_eq!(e.code, 400);
}

#[tokio::test]
async fn faults_can_match_one_clients_user_agent() {
    let server = TestApiServer::start().await;
    let client_with_agent = |agent: &'static str| {
        let mut config = server.config();
        config.headers.push((
            axum::http::header::USER_AGENT,
            axum::http::HeaderValue::from_static(agent),
        ));
        kube::Client::try_from(config).unwrap()
    };
    let a: Api<ConfigMap> = Api::default_namespaced(client_with_agent("tester/1 replica-a"));
    let b: Api<ConfigMap> = Api::default_namespaced(client_with_agent("tester/1 replica-b"));
    server.inject_fault(
        Fault::new(500)
            .resource("configmaps")
            .user_agent("replica-a")
            .times(usize::MAX),
    );
    assert_eq!(
        api_err(
            a.create(&PostParams::default(), &cm("x"))
                .await
                .unwrap_err()
        )
        .code,
        500
    );
    b.create(&PostParams::default(), &cm("x")).await.unwrap();
    assert_eq!(api_err(a.get("x").await.unwrap_err()).code, 500);
    // A client without that User-Agent is not matched either.
    Api::<ConfigMap>::default_namespaced(server.client())
        .get("x")
        .await
        .unwrap();
    let agents: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.resource == "configmaps")
        .map(|r| (r.user_agent.unwrap_or_default(), r.status))
        .collect();
    assert_eq!(agents[0], ("tester/1 replica-a".to_string(), 500));
    assert_eq!(agents[1], ("tester/1 replica-b".to_string(), 201));
    server.clear_faults();
    a.get("x").await.unwrap();
}
