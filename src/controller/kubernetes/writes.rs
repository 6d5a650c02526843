//! The Kubernetes layer both reconcilers share: `Api` handles scoped to a shard, the status
//! write guarded by the resourceVersion it read, the finalizer patch, the Ready condition of
//! endpoints, and trimming what the caches keep.

use std::collections::BTreeMap;

use k8s_openapi::{NamespaceResourceScope, api::core::v1::Namespace};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{Patch, PatchParams},
};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::json;

use super::status_writes::StatusWrites;
use crate::{
    api::{UserInvitation, UserInvitationStatus},
    reconcile::{StatusWriter, WriteError},
};

/// The annotation `kubectl apply` keeps the whole last manifest in; never needed here.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// An `Api` over one namespace, or all of them.
pub fn scoped<K>(client: &Client, scope: Option<&str>) -> Api<K>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>,
{
    match scope {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Drops what a cache never needs (managed fields, the last-applied manifest), which would
/// otherwise more than double what each cached object costs.
pub fn trim_for_cache<K: Resource>(object: &mut K) {
    let meta = object.meta_mut();
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove(LAST_APPLIED);
    }
}

/// Trims a cached UserInvitation further than [`trim_for_cache`]: of its metadata the
/// controller reads only its name, namespace, uid, resourceVersion, generation, finalizers,
/// deletion timestamp and the pause annotation, so labels, every other annotation, owner
/// references and the like are dropped before the object is stored (with 10,000 resources
/// cached, every byte per object is 10 kB). Spec and status are kept whole: the status write
/// is computed from the cached status, but every list is cut to its length: a decoded list
/// grows by doubling, so five users took room for eight.
pub fn trim_invitation_for_cache(invitation: &mut UserInvitation) {
    trim_for_cache(invitation);
    shrink_lists(invitation);
    let meta = &mut invitation.metadata;
    meta.labels = None;
    meta.owner_references = None;
    meta.generate_name = None;
    meta.self_link = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.retain(|key, _| key == crate::api::PAUSED_ANNOTATION);
        if annotations.is_empty() {
            meta.annotations = None;
        }
    }
}

/// Cuts the spec's and the status's lists to their lengths.
fn shrink_lists(invitation: &mut UserInvitation) {
    for user in invitation.spec.users.iter_mut().flatten() {
        user.groups.shrink_to_fit();
        user.user_groups.shrink_to_fit();
        user.roles.shrink_to_fit();
    }
    if let Some(users) = invitation.spec.users.as_mut() {
        users.shrink_to_fit();
    }
    if let Some(status) = invitation.status.as_mut() {
        status.conditions.shrink_to_fit();
        status.users.shrink_to_fit();
        status.invited_users.shrink_to_fit();
    }
}

/// One watch event, or its error.
type WatchItem<K> = Result<kube::runtime::watcher::Event<K>, kube::runtime::watcher::Error>;

/// Objects a watch event yields.
type Changed<K> =
    futures::stream::Iter<std::vec::IntoIter<Result<K, kube::runtime::watcher::Error>>>;

/// A trigger stream for a kube-runtime `Controller` without the watch's errors, which are
/// logged here instead (`what`: what is watched).
///
/// The `Controller` pauses its whole trigger stream after every error it yields (its
/// `trigger_backoff`: 0.8 s doubling up to 30 s) and resets that pause only when the stream
/// yields an object. A trigger stream that yields objects rarely (the UserInvitation watch
/// passes on spec changes only, not status writes nor relisted unchanged objects) saw its pause
/// grow with every expired watch (a `410` after an etcd compaction) or failed list, and while
/// paused nothing polls the watch: the cache the reconciles read from (and the holder index)
/// stood still for up to half a minute at a time, so every pass after a write of its own met an
/// outdated copy and looked again, and again. The watches back off on their own
/// (`default_backoff`, reset by every event), so the controller need not.
pub fn without_errors<T, S>(
    stream: S,
    what: &'static str,
) -> impl futures::Stream<Item = Result<T, kube::runtime::watcher::Error>> + Send + 'static
where
    S: futures::Stream<Item = Result<T, kube::runtime::watcher::Error>> + Send + 'static,
    T: Send + 'static,
{
    use futures::StreamExt;
    stream.filter_map(move |item| {
        std::future::ready(match item {
            Ok(object) => Some(Ok(object)),
            Err(error) => {
                tracing::warn!(%error, "watching {what}");
                None
            }
        })
    })
}

/// A trigger backoff that never grows: one second after each watch error. For a kube-runtime
/// `Controller` built on its own watch (`Controller::new`), whose trigger backoff otherwise
/// doubles up to 30 s and resets only when an object comes through: a controller watching few
/// or no objects would stop polling its watch for that long after repeated expiries (see
/// [`without_errors`]). The watch itself still backs off on its own.
pub struct SteadyTriggerBackoff;

impl Iterator for SteadyTriggerBackoff {
    type Item = std::time::Duration;

    fn next(&mut self) -> Option<std::time::Duration> {
        Some(std::time::Duration::from_secs(1))
    }
}

impl kube::runtime::utils::Backoff for SteadyTriggerBackoff {
    fn reset(&mut self) {}
}

/// Turns a watch into the changes that matter to the resources using an endpoint: a new spec
/// (generation) or a deletion, not a status write (the endpoint-status controller writes one
/// on every check that changes something, which would wake every resource using it).
pub fn spec_changes<K>() -> impl FnMut(WatchItem<K>) -> Changed<K>
where
    K: Resource<DynamicType = ()> + Clone,
{
    use kube::runtime::{reflector::ObjectRef, watcher::Event};
    let mut generations: std::collections::HashMap<ObjectRef<K>, Option<i64>> =
        std::collections::HashMap::new();
    move |event| {
        let mut changed = |object: K| {
            let generation = object.meta().generation;
            let previous = generations.insert(ObjectRef::from_obj(&object), generation);
            (previous != Some(generation)).then_some(object)
        };
        let out: Vec<_> = match event {
            Err(e) => vec![Err(e)],
            Ok(Event::Apply(object) | Event::InitApply(object)) => {
                changed(object).into_iter().map(Ok).collect()
            }
            Ok(Event::Delete(object)) => {
                generations.remove(&ObjectRef::from_obj(&object));
                vec![Ok(object)]
            }
            Ok(Event::Init | Event::InitDone) => Vec::new(),
        };
        futures::stream::iter(out)
    }
}

/// Whether a write guarded by what was read (a JSON patch `test` of the resourceVersion or of
/// the finalizer, or a write carrying the resourceVersion) failed because the object changed
/// meanwhile. The API server answers a failed JSON patch `test` with `422 Invalid`, the
/// generic message "the server rejected our request due to an error in our request" and no
/// causes (a refused value is also `422 Invalid`, but lists its causes); a stale
/// resourceVersion is a `409 Conflict`.
pub fn is_guard_failure(error: &kube::Error) -> bool {
    match error {
        kube::Error::Api(status) => {
            status.is_conflict()
                || (status.code == 422
                    && status.reason == "Invalid"
                    && status.details.as_ref().is_none_or(|d| d.causes.is_empty()))
        }
        _ => false,
    }
}

/// Writes `status` to the status subresource with a JSON patch that first tests the
/// resourceVersion the object was read at. Returns the object as written.
///
/// The request body is serialized before the request waits for its turn (the Kubernetes
/// request limit): the patch as JSON values is several times the size of its bytes, and
/// hundreds of status writes may wait at once.
pub async fn guarded_status_write<K, S>(
    api: &Api<K>,
    name: &str,
    resource_version: &str,
    status: &S,
) -> Result<K, WriteError>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
    S: Serialize,
{
    let request = {
        let patch: json_patch::Patch = serde_json::from_value(json!([
            {"op": "test", "path": "/metadata/resourceVersion", "value": resource_version},
            {"op": "add", "path": "/status", "value": status},
        ]))
        .map_err(|e| WriteError::Failed(e.to_string()))?;
        kube::core::Request::new(api.resource_url())
            .patch_subresource(
                "status",
                name,
                &PatchParams::default(),
                &Patch::<()>::Json(patch),
            )
            .map_err(|e| WriteError::Failed(e.to_string()))?
    };
    api.clone()
        .into_client()
        .request::<K>(request)
        .await
        .map_err(|e| {
            if is_guard_failure(&e) {
                WriteError::Conflict
            } else {
                WriteError::Failed(e.to_string())
            }
        })
}

/// Writes the status of one UserInvitation, each write guarded by the version the previous
/// one produced: a concurrent change makes the write fail, and nothing is sent to the API
/// after a failed intent write.
pub struct KubeStatusWriter {
    api: Api<UserInvitation>,
    name: String,
    resource_version: String,
    /// The versions the writes produced, in order.
    pub produced: Vec<String>,
    /// The last status written, if any (also when a later write failed).
    pub last_written: Option<UserInvitationStatus>,
    /// Where each write is counted while in flight (events make way for it), if anywhere.
    in_flight: Option<StatusWrites>,
}

impl KubeStatusWriter {
    /// A writer for `invitation`, as read at `resource_version`.
    pub fn new(client: Client, invitation: &UserInvitation, resource_version: String) -> Self {
        KubeStatusWriter {
            api: Api::namespaced(client, &invitation.namespace().unwrap_or_default()),
            name: invitation.name_any(),
            resource_version,
            produced: Vec::new(),
            last_written: None,
            in_flight: None,
        }
    }

    /// Counts each write in `writes` while it is in flight.
    pub fn counted_in(mut self, writes: &StatusWrites) -> Self {
        self.in_flight = Some(writes.clone());
        self
    }
}

impl StatusWriter for KubeStatusWriter {
    async fn write(&mut self, status: &UserInvitationStatus) -> Result<(), WriteError> {
        let _in_flight = self.in_flight.as_ref().map(StatusWrites::start);
        let updated =
            guarded_status_write(&self.api, &self.name, &self.resource_version, status).await?;
        self.resource_version = updated.resource_version().unwrap_or_default();
        self.produced.push(self.resource_version.clone());
        self.last_written = Some(status.clone());
        Ok(())
    }
}

/// Adds or removes a finalizer with a JSON patch guarded by `test` operations. Returns the
/// object as written.
pub async fn set_finalizer<K>(
    api: &Api<K>,
    object: &K,
    finalizer: &str,
    present: bool,
) -> Result<K, kube::Error>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let finalizers = object.finalizers();
    let ops = if present {
        let rv = object.resource_version().unwrap_or_default();
        let add = if finalizers.is_empty() {
            json!({"op": "add", "path": "/metadata/finalizers", "value": [finalizer]})
        } else {
            json!({"op": "add", "path": "/metadata/finalizers/-", "value": finalizer})
        };
        json!([{"op": "test", "path": "/metadata/resourceVersion", "value": rv}, add])
    } else {
        let index = finalizers.iter().position(|f| f == finalizer).unwrap_or(0);
        json!([
            {"op": "test", "path": format!("/metadata/finalizers/{index}"), "value": finalizer},
            {"op": "remove", "path": format!("/metadata/finalizers/{index}")},
        ])
    };
    let patch: json_patch::Patch = serde_json::from_value(ops).expect("a valid JSON patch");
    api.patch(
        &object.name_any(),
        &PatchParams::default(),
        &Patch::<()>::Json(patch),
    )
    .await
}

/// The labels of a namespace (none when it is gone).
pub async fn namespace_labels(
    client: &Client,
    namespace: &str,
) -> Result<BTreeMap<String, String>, kube::Error> {
    let ns = Api::<Namespace>::all(client.clone())
        .get_opt(namespace)
        .await?;
    Ok(ns.and_then(|n| n.metadata.labels).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cached_invitation_keeps_what_the_controller_reads() {
        let full = json!({
            "apiVersion": "invite.operators.dev/v1alpha1", "kind": "UserInvitation",
            "metadata": {
                "name": "x", "namespace": "team", "uid": "u-1", "resourceVersion": "7",
                "generation": 3, "finalizers": ["invite.operators.dev/cleanup"],
                "deletionTimestamp": "2026-01-01T00:00:00Z",
                "labels": {"app": "web"},
                "annotations": {
                    crate::api::PAUSED_ANNOTATION: "true",
                    LAST_APPLIED: "{\"a\":1}",
                    "note": "long text",
                },
                "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "o", "uid": "o-1"}],
                "managedFields": [{"manager": "kubectl", "operation": "Apply"}],
                "generateName": "x-",
            },
            "spec": {
                "endpointRef": {"kind": "InvitationEndpoint", "name": "ep"},
                "users": [{"emailAddress": "a@example.com"}],
            },
            "status": {"observedGeneration": 3, "invited": 1},
        });
        let mut invitation: UserInvitation = serde_json::from_value(full).unwrap();
        let untouched = invitation.clone();
        trim_invitation_for_cache(&mut invitation);
        let meta = &invitation.metadata;
        assert!(invitation.is_paused(), "the pause annotation is kept");
        assert_eq!(meta.annotations.as_ref().map(|a| a.len()), Some(1));
        assert_eq!(meta.labels, None);
        assert_eq!(meta.owner_references, None);
        assert_eq!(meta.managed_fields, None);
        assert_eq!(meta.generate_name, None);
        // Everything the controller reads is as it was.
        assert_eq!(meta.name, untouched.metadata.name);
        assert_eq!(meta.namespace, untouched.metadata.namespace);
        assert_eq!(meta.uid, untouched.metadata.uid);
        assert_eq!(meta.resource_version, untouched.metadata.resource_version);
        assert_eq!(meta.generation, untouched.metadata.generation);
        assert_eq!(meta.finalizers, untouched.metadata.finalizers);
        assert_eq!(
            meta.deletion_timestamp,
            untouched.metadata.deletion_timestamp
        );
        assert_eq!(invitation.spec, untouched.spec);
        assert_eq!(invitation.status, untouched.status);

        // Without the pause annotation, no annotations are left at all.
        let mut other = untouched;
        other
            .metadata
            .annotations
            .as_mut()
            .unwrap()
            .remove(crate::api::PAUSED_ANNOTATION);
        trim_invitation_for_cache(&mut other);
        assert_eq!(other.metadata.annotations, None);
        assert!(!other.is_paused());
    }
}
