//! Drives the test API server with a real `kube::Client` and kube-runtime, on what the operator
//! relies on: resourceVersion conflicts, JSON patch `test`, the status subresource and
//! generation, deletion with finalizers, selectors, watches (resumption, `410 Expired`,
//! bookmarks), faults and request records.

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{CustomResource, CustomResourceExt, ResourceExt};
use kube_test_apiserver::{Fault, TestApiServer, create_or_replace};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::time::Duration;

#[derive(CustomResource, schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, Default)]
#[kube(
    group = "test.kube-apiserver.dev",
    version = "v1",
    kind = "Widget",
    namespaced
)]
#[kube(status = "WidgetStatus")]
pub struct WidgetSpec {
    pub size: i32,
}

#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct WidgetStatus {
    pub ready: bool,
}

const T: Duration = Duration::from_secs(5);

async fn setup() -> (TestApiServer, Api<Widget>) {
    let server = TestApiServer::start().await;
    let crds: Api<CustomResourceDefinition> = Api::all(server.client());
    let crd = create_or_replace(&crds, &Widget::crd()).await.unwrap();
    let conditions = crd.status.unwrap().conditions.unwrap_or_default();
    let established = conditions
        .iter()
        .any(|c| c.type_ == "Established" && c.status == "True");
    assert!(established);
    let widgets = Api::namespaced(server.client(), "default");
    (server, widgets)
}

fn widget(name: &str, size: i32) -> Widget {
    Widget::new(name, WidgetSpec { size })
}

/// The status code of a failed call (or 200).
fn code<T>(r: Result<T, kube::Error>) -> u16 {
    match r {
        Ok(_) => 200,
        Err(kube::Error::Api(s)) => s.code,
        Err(e) => panic!("{e}"),
    }
}

/// Merge-patches the object `name`.
async fn merge<K>(api: &Api<K>, name: &str, patch: Value) -> kube::Result<K>
where
    K: Clone + std::fmt::Debug + serde::de::DeserializeOwned,
{
    let (pp, patch) = (PatchParams::default(), Patch::Merge(patch));
    api.patch(name, &pp, &patch).await
}

/// The next item of a stream (within [`T`]).
async fn next<S: futures::Stream + Unpin>(stream: &mut S) -> Option<S::Item> {
    tokio::time::timeout(T, stream.next()).await.unwrap()
}

fn json_patch(ops: Value) -> Patch<()> {
    Patch::Json(serde_json::from_value(ops).unwrap())
}

#[tokio::test]
async fn writes_conflicts_and_patches() {
    let (_server, widgets) = setup().await;
    let pp = PostParams::default();
    let created = widgets.create(&pp, &widget("w", 1)).await.unwrap();
    let rv = created.resource_version().unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    assert!(created.uid().is_some() && created.creation_timestamp().is_some());
    let p = PatchParams::default();
    // (what, result code)
    let cases: Vec<(&str, u16)> = vec![
        ("create again", code(widgets.create(&pp, &widget("w", 1)).await)),
        ("get missing", code(widgets.get("nope").await)),
        ("create in a missing namespace", code(Api::<Widget>::namespaced(widgets.clone().into_client(), "nowhere").create(&pp, &widget("x", 1)).await)),
        ("merge patch", code(widgets.patch("w", &p, &Patch::Merge(json!({"spec": {"size": 2}}))).await)),
        ("merge patch with a stale resourceVersion", code(widgets.patch("w", &p, &Patch::Merge(json!({"metadata": {"resourceVersion": rv}, "spec": {"size": 3}}))).await)),
        ("replace with a stale resourceVersion", code(widgets.replace("w", &pp, &created).await)),
        ("JSON patch, failed test", code(widgets.patch("w", &p, &json_patch(json!([{"op": "test", "path": "/metadata/resourceVersion", "value": rv}, {"op": "replace", "path": "/spec/size", "value": 4}]))).await)),
        ("JSON patch, test of a missing path against null", code(widgets.patch("w", &p, &json_patch(json!([{"op": "test", "path": "/metadata/finalizers", "value": null}, {"op": "add", "path": "/metadata/finalizers", "value": ["a.dev/f"]}]))).await)),
        ("JSON patch, remove a missing path", code(widgets.patch("w", &p, &json_patch(json!([{"op": "remove", "path": "/spec/nothing"}]))).await)),
        ("strategic merge patch", code(widgets.patch("w", &p, &Patch::Strategic(json!({"spec": {"size": 5}}))).await)),
        ("delete collection", code(widgets.delete_collection(&DeleteParams::default(), &ListParams::default()).await)),
    ];
    let expected = [409, 404, 404, 200, 409, 409, 422, 200, 422, 415, 405];
    for ((what, got), want) in cases.iter().zip(expected) {
        assert_eq!(*got, want, "{what}");
    }
    // A failed JSON patch is answered as kube-apiserver does: no causes.
    let failed_test = json_patch(json!([{"op": "test", "path": "/spec/size", "value": 9}]));
    let failed = widgets.patch("w", &p, &failed_test).await;
    let Err(kube::Error::Api(s)) = failed else {
        panic!("{failed:?}")
    };
    let rejected = "the server rejected our request due to an error in our request";
    assert_eq!(s.reason, "Invalid");
    assert_eq!(s.message, rejected);
    assert!(s.details.is_none_or(|d| d.causes.is_empty()));
    let now = widgets.get("w").await.unwrap();
    assert_eq!((now.spec.size, now.metadata.generation), (2, Some(2)));
    assert_eq!(now.finalizers(), ["a.dev/f"]);
    // A no-op write changes nothing.
    let same = widgets.replace("w", &pp, &now).await.unwrap();
    assert_eq!(same.resource_version(), now.resource_version());
}

#[tokio::test]
async fn status_subresource_and_generation() {
    let (_server, widgets) = setup().await;
    let pp = PostParams::default();
    let mut w = widget("s", 1);
    w.status = Some(WidgetStatus { ready: true });
    let created = widgets.create(&pp, &w).await.unwrap();
    assert_eq!(created.status, None, "create drops the status");
    let p = PatchParams::default();
    let patch = Patch::Merge(json!({"status": {"ready": true}, "spec": {"size": 7}}));
    let s = widgets.patch_status("s", &p, &patch).await.unwrap();
    let ready = s.status.clone().unwrap().ready;
    let (size, generation) = (s.spec.size, s.metadata.generation);
    assert_eq!((size, ready, generation), (1, true, Some(1)));
    let mut replaced = s.clone();
    replaced.spec.size = 3;
    replaced.status = Some(WidgetStatus { ready: false });
    let r = widgets.replace("s", &pp, &replaced).await.unwrap();
    let ready = r.status.unwrap().ready;
    let (size, generation) = (r.spec.size, r.metadata.generation);
    assert_eq!((size, ready, generation), (3, true, Some(2)));
    let labels = json!({"metadata": {"labels": {"a": "b"}}});
    let labelled = merge(&widgets, "s", labels).await.unwrap();
    let generation = labelled.metadata.generation;
    assert_eq!(generation, Some(2), "metadata does not bump the generation");
}

#[tokio::test]
async fn deletion_with_finalizers_and_namespaces() {
    let (_server, widgets) = setup().await;
    let (pp, dp) = (PostParams::default(), DeleteParams::default());
    let mut w = widget("f", 1);
    w.metadata.finalizers = Some(vec!["a.dev/f".into()]);
    widgets.create(&pp, &w).await.unwrap();
    widgets.delete("f", &dp).await.unwrap();
    let deleting = widgets.get("f").await.unwrap();
    assert!(deleting.metadata.deletion_timestamp.is_some());
    assert_eq!(deleting.metadata.generation, Some(2));
    let finalizers = json!({"metadata": {"finalizers": ["a.dev/f", "b.dev/g"]}});
    let add = merge(&widgets, "f", finalizers).await;
    assert_eq!(code(add), 422, "no finalizer can be added while deleting");
    let no_finalizers = json!({"metadata": {"finalizers": null}});
    merge(&widgets, "f", no_finalizers.clone()).await.unwrap();
    assert_eq!(code(widgets.get("f").await), 404);
    // A namespace goes once its content is gone; nothing can be created in it meanwhile.
    let namespaces: Api<Namespace> = Api::all(widgets.clone().into_client());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "gone"}})).unwrap();
    let ns = namespaces.create(&pp, &ns).await.unwrap();
    assert_eq!(ns.labels()["kubernetes.io/metadata.name"], "gone");
    let inside: Api<Widget> = Api::namespaced(widgets.clone().into_client(), "gone");
    inside.create(&pp, &w).await.unwrap();
    namespaces.delete("gone", &dp).await.unwrap();
    let terminating = namespaces.get("gone").await.unwrap().status.unwrap();
    assert_eq!(terminating.phase.as_deref(), Some("Terminating"));
    assert_eq!(code(inside.create(&pp, &widget("late", 1)).await), 403);
    merge(&inside, "f", no_finalizers).await.unwrap();
    assert_eq!(code(namespaces.get("gone").await), 404);
}

#[tokio::test]
async fn lists_selectors_and_pages() {
    let (_server, widgets) = setup().await;
    for (name, labels) in [
        ("a", json!({"app": "x", "tier": "1"})),
        ("b", json!({"app": "y"})),
        ("c", json!({})),
    ] {
        let mut w = widget(name, 1);
        w.metadata.labels = serde_json::from_value(labels).unwrap();
        widgets.create(&PostParams::default(), &w).await.unwrap();
    }
    let cases = [("", "a b c"), ("app=x", "a"), ("app=x,tier=1", "a")];
    for (labels, want) in cases {
        let lp = ListParams::default().labels(labels);
        let listed = widgets.list(&lp).await.unwrap();
        let names: Vec<String> = listed.iter().map(|w| w.name_any()).collect();
        assert_eq!(names.join(" "), want, "{labels:?}");
    }
    // Only `key=value` requirements are emulated; anything else is refused.
    for bad in ["app in (x)", "app!=x", "!app", "app=x,,tier=1"] {
        let refused = widgets.list(&ListParams::default().labels(bad)).await;
        assert_eq!(code(refused), 400, "{bad:?}");
    }
    let fields = ListParams::default().fields("metadata.name=a");
    let fields = widgets.list(&fields).await;
    assert_eq!(code(fields), 400, "field selectors are not emulated");
    let page = widgets.list(&ListParams::default().limit(2)).await.unwrap();
    assert_eq!(page.items.len(), 2);
    let token = page.metadata.continue_.as_deref().unwrap();
    let next_page = ListParams::default().limit(2).continue_token(token);
    let rest = widgets.list(&next_page).await;
    let rest = rest.unwrap();
    let names: Vec<_> = rest.items.iter().map(|w| w.name_any()).collect();
    assert_eq!(names, ["c"]);
    assert!(rest.metadata.continue_.is_none());
}

#[tokio::test]
async fn watches_resume_expire_and_bookmark() {
    let (server, widgets) = setup().await;
    server.set_bookmark_interval(Duration::from_millis(50));
    let pp = PostParams::default();
    let a = widgets.create(&pp, &widget("a", 1)).await.unwrap();
    widgets.create(&pp, &widget("b", 1)).await.unwrap();
    for on in ["yes", "no"] {
        let labels = json!({"metadata": {"labels": {"on": on}}});
        merge(&widgets, "a", labels).await.unwrap();
    }
    // Resumed from a's creation, selecting `on=yes`: b never matches, a enters and leaves.
    let wp = WatchParams::default().labels("on=yes");
    let rv = a.resource_version().unwrap();
    let mut events = widgets.watch(&wp, &rv).await.unwrap().boxed();
    let mut seen = Vec::new();
    while seen.len() < 3 {
        match next(&mut events).await.unwrap().unwrap() {
            WatchEvent::Added(w) => seen.push(format!("ADDED {}", w.name_any())),
            WatchEvent::Deleted(w) => seen.push(format!("DELETED {}", w.name_any())),
            WatchEvent::Bookmark(_) => seen.push("BOOKMARK".into()),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(seen, ["ADDED a", "DELETED a", "BOOKMARK"]);
    assert_eq!(server.open_watches(), 1);
    drop(events);
    // After a compaction, resuming is `410 Expired`; kube's watcher lists again.
    server.compact_history();
    let expired = widgets.watch(&WatchParams::default(), &rv).await;
    let mut expired = expired.unwrap().boxed();
    match next(&mut expired).await.transpose().unwrap() {
        Some(WatchEvent::Error(e)) => assert_eq!(e.code, 410),
        other => panic!("{other:?}"),
    }
    let objects = watcher(widgets.clone(), watcher::Config::default());
    let mut objects = objects.applied_objects().boxed();
    let first = next(&mut objects).await.unwrap().unwrap();
    assert!(["a", "b"].contains(&first.name_any().as_str()));
    server.close_watches();
    widgets.create(&pp, &widget("c", 1)).await.unwrap();
    loop {
        let w = next(&mut objects).await.unwrap().unwrap();
        if w.name_any() == "c" {
            break;
        }
    }
}

#[tokio::test]
async fn faults_and_request_records() {
    let (server, widgets) = setup().await;
    let pp = PostParams::default();
    widgets.create(&pp, &widget("w", 1)).await.unwrap();
    let status = |ok| Patch::Merge(json!({"status": {"ready": ok}}));
    let status_patches = Fault::new(500).verb("patch").subresource(Some("status"));
    server.inject_fault(status_patches.times(2));
    let gets = Fault::new(429).verb("get").user_agent("nobody");
    server.inject_fault(gets.retry_after(1));
    let update = Fault::new(422).resource("widgets").name("w");
    server.inject_fault(update.namespace("default").verb("update"));
    let p = PatchParams::default();
    let patch_status = async || code(widgets.patch_status("w", &p, &status(true)).await);
    let patch_main = async || code(widgets.patch("w", &p, &Patch::Merge(json!({}))).await);
    // (what, result code): faults match by verb, subresource, user agent, name, and run out.
    let cases = [
        ("fault 1 of 2", patch_status().await),
        ("a patch of the main resource", patch_main().await),
        ("fault 2 of 2", patch_status().await),
        ("faults ran out", patch_status().await),
        ("another user agent", code(widgets.get("w").await)),
    ];
    for ((what, got), want) in cases.iter().zip([500, 200, 500, 200, 200]) {
        assert_eq!(*got, want, "{what}");
    }
    let current = widgets.get("w").await.unwrap();
    let refused = widgets.replace("w", &pp, &current).await;
    let Err(kube::Error::Api(s)) = refused else {
        panic!("{refused:?}")
    };
    assert_eq!((s.code, s.reason.as_str()), (422, "Invalid"));
    let causes = s.details.unwrap().causes;
    assert!(!causes.is_empty(), "an injected 422 is a refused value");
    let records = server.requests();
    let last = records.last().unwrap();
    let last_call = (last.verb.as_str(), last.resource.as_str(), last.status);
    assert_eq!(last_call, ("update", "widgets", 422));
    assert_eq!(last.api_group, "test.kube-apiserver.dev");
    let mut failed = records.iter().filter(|r| r.status == 500);
    assert!(failed.any(|r| r.subresource.as_deref() == Some("status")));
}

/// Built-ins: Secrets fold stringData; PUT creates a missing Lease, and conflicts on a stale one.
#[tokio::test]
async fn secrets_and_leases() {
    let (server, _) = setup().await;
    let pp = PostParams::default();
    let secrets: Api<Secret> = Api::namespaced(server.client(), "default");
    let metadata = json!({"name": "s"});
    let secret = json!({"metadata": metadata, "stringData": {"token": "t"}});
    let secret = create_or_replace(&secrets, &serde_json::from_value(secret).unwrap()).await;
    let secret = secret.unwrap();
    assert_eq!(secret.data.unwrap()["token"].0, b"t");
    assert_eq!(secret.type_.as_deref(), Some("Opaque"));
    let replaced = json!({"metadata": metadata, "data": {"token": "dQ=="}});
    let replaced = create_or_replace(&secrets, &serde_json::from_value(replaced).unwrap()).await;
    let replaced = replaced.unwrap();
    assert_eq!(replaced.data.unwrap()["token"].0, b"u");
    let leases: Api<Lease> = Api::namespaced(server.client(), "default");
    let lease = json!({"metadata": {"name": "l"}, "spec": {"holderIdentity": "me"}});
    let lease: Lease = serde_json::from_value(lease).unwrap();
    let lease = leases.replace("l", &pp, &lease).await.unwrap();
    assert_eq!(lease.spec.unwrap().holder_identity.as_deref(), Some("me"));
    let stale = json!({"metadata": {"name": "l", "resourceVersion": "1"}});
    let stale: Lease = serde_json::from_value(stale).unwrap();
    assert_eq!(code(leases.replace("l", &pp, &stale).await), 409);
}
