//! The object store: one revisioned keyspace (like etcd), the write pipeline (preconditions,
//! status subresource, generation, finalizers, no-op detection), watch fan-out, and what the
//! namespace and CRD controllers do.

use crate::errors::ApiError;
use crate::resources::ResourceDef;
use crate::selectors::Selector;
use crate::{Fault, RecordedRequest};
use axum::body::Bytes;
use base64::Engine;
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, VecDeque};
use tokio::sync::mpsc;

pub(crate) type ResKey = (String, String);
type ObjKey = (String, String);

/// How many changes are kept for watches resuming from a resourceVersion.
const HISTORY: usize = 10_000;

/// A change in the keyspace, kept for watch resumption.
pub(crate) struct HistEvent {
    pub rv: u64,
    key: ResKey,
    typ: &'static str,
    old: Option<Value>,
    new: Value,
}

/// An open watch stream.
pub(crate) struct Watcher {
    pub id: u64,
    pub key: ResKey,
    pub namespace: Option<String>,
    pub selector: Selector,
    pub version: String,
    pub tx: mpsc::UnboundedSender<Bytes>,
}

/// What a request is about: resource, served version, namespace, `status` subresource.
#[derive(Clone, Debug)]
pub(crate) struct Ctx {
    pub res: ResourceDef,
    pub version: String,
    pub namespace: String,
    pub status: bool,
}

/// The whole server state, guarded by one mutex.
pub(crate) struct Store {
    pub rv: u64,
    pub resources: BTreeMap<ResKey, ResourceDef>,
    objects: BTreeMap<ResKey, BTreeMap<ObjKey, Value>>,
    pub history: VecDeque<HistEvent>,
    pub compacted_rv: u64,
    pub watchers: Vec<Watcher>,
    pub next_watch_id: u64,
    pub requests: Vec<RecordedRequest>,
    pub faults: Vec<Fault>,
}

pub(crate) fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn meta<'a>(obj: &'a Value, field: &str) -> &'a str {
    obj["metadata"][field].as_str().unwrap_or_default()
}

fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj["metadata"].is_object() {
        obj["metadata"] = json!({});
    }
    obj["metadata"].as_object_mut().expect("an object")
}

fn finalizers(obj: &Value) -> Vec<&str> {
    let list = obj["metadata"]["finalizers"].as_array();
    list.into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

fn deleting(obj: &Value) -> bool {
    obj["metadata"]["deletionTimestamp"].is_string()
}

/// Drops null and empty optional metadata fields (Go's `omitempty`).
fn normalize_meta(obj: &mut Value) {
    meta_mut(obj).retain(|_, v| {
        !(v.is_null()
            || v.as_object().is_some_and(Map::is_empty)
            || v.as_array().is_some_and(Vec::is_empty))
    });
}

/// Everything except metadata and status, for generation tracking.
fn spec_part(obj: &Value) -> Value {
    let mut o = obj.clone();
    if let Some(m) = o.as_object_mut() {
        for k in ["metadata", "status", "apiVersion", "kind"] {
            m.remove(k);
        }
    }
    o
}

fn nested<'a>(obj: &'a mut Value, key: &str) -> &'a mut Value {
    if !obj[key].is_object() {
        obj[key] = json!({});
    }
    &mut obj[key]
}

/// The objects listed or watched: a watcher's scope and selectors.
fn selected(w: &Watcher, obj: &Value) -> bool {
    w.namespace
        .as_deref()
        .is_none_or(|n| meta(obj, "namespace") == n)
        && w.selector.matches(obj)
}

impl Store {
    pub fn new() -> Self {
        let mut s = Store {
            rv: 1,
            resources: BTreeMap::new(),
            objects: BTreeMap::new(),
            history: VecDeque::new(),
            compacted_rv: 0,
            watchers: Vec::new(),
            next_watch_id: 1,
            requests: Vec::new(),
            faults: Vec::new(),
        };
        for r in ResourceDef::builtins() {
            s.resources.insert((r.group.clone(), r.plural.clone()), r);
        }
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let ctx = s.ctx("", "namespaces", "");
            s.create(&ctx, json!({"metadata": {"name": ns}}))
                .expect("a namespace");
        }
        s
    }

    /// The context of a request on a served resource, in its storage version.
    fn ctx(&self, group: &str, plural: &str, namespace: &str) -> Ctx {
        let res = self.resources[&(group.to_string(), plural.to_string())].clone();
        Ctx {
            version: res.versions[0].clone(),
            res,
            namespace: namespace.into(),
            status: false,
        }
    }

    /// Renders a stored object in the served version.
    pub fn render(res: &ResourceDef, obj: &Value, version: &str) -> Value {
        let mut o = obj.clone();
        o["apiVersion"] = json!(res.api_version(version));
        o
    }

    pub fn get(&self, ctx: &Ctx, name: &str) -> Result<Value, ApiError> {
        let key = (ctx.res.group.clone(), ctx.res.plural.clone());
        let object = self
            .objects
            .get(&key)
            .and_then(|m| m.get(&(ctx.namespace.clone(), name.into())));
        object
            .cloned()
            .ok_or_else(|| ApiError::not_found(&ctx.res, name))
    }

    /// Objects of a resource in key order (namespace, name), optionally in one namespace.
    pub fn list(&self, res: &ResourceDef, ns: Option<&str>) -> Vec<&Value> {
        let objects = self.objects.get(&(res.group.clone(), res.plural.clone()));
        let all = objects.into_iter().flatten();
        all.filter(|((n, _), _)| ns.is_none_or(|ns| ns == n))
            .map(|(_, v)| v)
            .collect()
    }

    // Commit and watch fan-out.

    /// Stores `new` at the next revision and tells the watchers.
    fn commit(
        &mut self,
        res: &ResourceDef,
        typ: &'static str,
        old: Option<Value>,
        mut new: Value,
    ) -> Value {
        self.rv += 1;
        meta_mut(&mut new).insert("resourceVersion".into(), json!(self.rv.to_string()));
        let key = (res.group.clone(), res.plural.clone());
        let okey = (
            meta(&new, "namespace").to_string(),
            meta(&new, "name").to_string(),
        );
        let objects = self.objects.entry(key.clone()).or_default();
        if typ == "DELETED" {
            objects.remove(&okey);
        } else {
            objects.insert(okey, new.clone());
        }
        let ev = HistEvent {
            rv: self.rv,
            key,
            typ,
            old,
            new: new.clone(),
        };
        let closed: Vec<u64> = (self.watchers.iter())
            .filter(|w| {
                self.translate(w, &ev)
                    .is_some_and(|line| w.tx.send(line).is_err())
            })
            .map(|w| w.id)
            .collect();
        self.watchers.retain(|w| !closed.contains(&w.id));
        self.history.push_back(ev);
        if self.history.len() > HISTORY
            && let Some(e) = self.history.pop_front()
        {
            self.compacted_rv = e.rv;
        }
        new
    }

    /// Discards the history, like an etcd compaction: watches from an older resourceVersion
    /// then get `410 Gone`.
    pub fn compact(&mut self) {
        self.history.clear();
        self.compacted_rv = self.rv;
    }

    /// The watch line a watcher gets for an event, if any: objects starting or stopping to
    /// match its selectors are `ADDED` or `DELETED`.
    pub fn translate(&self, w: &Watcher, ev: &HistEvent) -> Option<Bytes> {
        if w.key != ev.key {
            return None;
        }
        let now = selected(w, &ev.new);
        let typ = match (ev.typ, ev.old.as_ref().is_some_and(|o| selected(w, o)), now) {
            ("ADDED" | "DELETED", _, true) => ev.typ,
            ("MODIFIED", true, true) => "MODIFIED",
            ("MODIFIED", false, true) => "ADDED",
            ("MODIFIED", true, false) => "DELETED",
            _ => return None,
        };
        let res = self.resources.get(&w.key)?;
        Some(watch_line(typ, &Self::render(res, &ev.new, &w.version)))
    }

    // Writes.

    /// Creates an object (POST, or PUT of a missing Lease or Event).
    pub fn create(&mut self, ctx: &Ctx, mut obj: Value) -> Result<Value, ApiError> {
        let res = &ctx.res;
        check_body(&obj, res)?;
        let name = meta(&obj, "name").to_string();
        if name.is_empty() {
            return Err(ApiError::invalid(
                res,
                "",
                "metadata.name",
                "FieldValueRequired",
                "Required value: name or generateName is required",
            ));
        }
        if res.namespaced {
            let ns = &ctx.namespace;
            if !matches!(meta(&obj, "namespace"), n if n.is_empty() || n == ns) {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            meta_mut(&mut obj).insert("namespace".into(), json!(ns));
            let namespace = self.get(&self.ctx("", "namespaces", ""), ns);
            let namespace = namespace.map_err(|_| ApiError::namespace_not_found(ns))?;
            if deleting(&namespace) {
                let why = format!(
                    "unable to create new content in namespace {ns} because it is being terminated"
                );
                return Err(ApiError::forbidden(res, &name, why));
            }
        } else {
            meta_mut(&mut obj).remove("namespace");
        }
        if self.get(ctx, &name).is_ok() {
            return Err(ApiError::already_exists(res, &name));
        }
        let m = meta_mut(&mut obj);
        for k in [
            "resourceVersion",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "managedFields",
        ] {
            m.remove(k);
        }
        m.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
        m.insert("creationTimestamp".into(), json!(now()));
        if res.custom {
            m.insert("generation".into(), json!(1));
        }
        if res.custom && res.status {
            // Create cannot set the status when the status subresource is enabled.
            obj["status"] = Value::Null;
        }
        if obj["status"].is_null()
            && let Some(o) = obj.as_object_mut()
        {
            o.remove("status");
        }
        obj["apiVersion"] = json!(res.api_version(&res.versions[0]));
        obj["kind"] = json!(res.kind);
        normalize_meta(&mut obj);
        self.mutate(res, &mut obj, true)?;
        let obj = self.commit(res, "ADDED", None, obj);
        self.after_write(res, &obj);
        Ok(obj)
    }

    /// Replaces an object with `new` (PUT, or the result of a patch). A
    /// `metadata.resourceVersion` or `uid` in `new` is a precondition.
    pub fn update(&mut self, ctx: &Ctx, name: &str, mut new: Value) -> Result<Value, ApiError> {
        let res = &ctx.res;
        check_body(&new, res)?;
        if !matches!(meta(&new, "name"), n if n.is_empty() || n == name) {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({}) does not match the name on the URL ({name})",
                meta(&new, "name")
            )));
        }
        let old = match self.get(ctx, name) {
            Ok(old) => old,
            Err(_) if res.create_on_update && !ctx.status => {
                meta_mut(&mut new).insert("name".into(), json!(name));
                return self.create(ctx, new);
            }
            Err(e) => return Err(e),
        };
        let rv = meta(&new, "resourceVersion");
        if !rv.is_empty() && rv != meta(&old, "resourceVersion") {
            return Err(ApiError::conflict(res, name, crate::errors::MODIFIED));
        }
        let uid = meta(&new, "uid");
        if !uid.is_empty() && uid != meta(&old, "uid") {
            let why = format!(
                "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                meta(&old, "uid")
            );
            return Err(ApiError::conflict(res, name, why));
        }
        if ctx.status {
            // Only the status changes.
            let mut candidate = old.clone();
            candidate["status"] = new["status"].take();
            new = candidate;
        } else {
            if res.status {
                new["status"] = old["status"].clone();
            }
            let m = meta_mut(&mut new);
            for k in [
                "name",
                "namespace",
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
            ] {
                match old["metadata"].get(k) {
                    Some(v) => m.insert(k.into(), v.clone()),
                    None => m.remove(k),
                };
            }
        }
        if new["status"].is_null()
            && let Some(o) = new.as_object_mut()
        {
            o.remove("status");
        }
        new["apiVersion"] = old["apiVersion"].clone();
        new["kind"] = json!(res.kind);
        meta_mut(&mut new).insert(
            "resourceVersion".into(),
            old["metadata"]["resourceVersion"].clone(),
        );
        normalize_meta(&mut new);
        no_finalizer_added_while_deleting(res, name, &old, &new)?;
        self.mutate(res, &mut new, false)?;
        if res.custom && spec_part(&new) != spec_part(&old) {
            let generation = old["metadata"]["generation"].as_i64().unwrap_or(0);
            meta_mut(&mut new).insert("generation".into(), json!(generation + 1));
        }
        if new == old {
            return Ok(old);
        }
        let gone = deleting(&new) && finalizers(&new).is_empty() && !self.holds_content(res, &new);
        let new = self.commit(
            res,
            if gone { "DELETED" } else { "MODIFIED" },
            Some(old),
            new,
        );
        self.after_write(res, &new);
        Ok(new)
    }

    /// Deletes an object, honouring finalizers (`DeleteOptions` are not emulated).
    pub fn delete(&mut self, ctx: &Ctx, name: &str) -> Result<Value, ApiError> {
        let res = &ctx.res;
        if res.is("apiextensions.k8s.io", "customresourcedefinitions") {
            return Err(ApiError::method_not_allowed());
        }
        let old = self.get(ctx, name)?;
        let namespace = res.is("", "namespaces");
        if deleting(&old) {
            return Ok(old);
        }
        if finalizers(&old).is_empty() && !namespace {
            let old_copy = old.clone();
            let gone = self.commit(res, "DELETED", Some(old_copy), old);
            self.after_write(res, &gone);
            return Ok(gone);
        }
        let mut new = old.clone();
        let m = meta_mut(&mut new);
        m.insert("deletionTimestamp".into(), json!(now()));
        m.insert("deletionGracePeriodSeconds".into(), json!(0));
        if let Some(g) = m.get("generation").and_then(Value::as_i64) {
            m.insert("generation".into(), json!(g + 1));
        }
        if namespace {
            nested(&mut new, "status")["phase"] = json!("Terminating");
        }
        let new = self.commit(res, "MODIFIED", Some(old), new);
        self.after_write(res, &new);
        Ok(new)
    }

    /// What the registries and admission do to built-ins: Secrets' `stringData` and type,
    /// Namespaces' finalizer, phase and name label, CRDs' defaults and status.
    fn mutate(&self, res: &ResourceDef, obj: &mut Value, create: bool) -> Result<(), ApiError> {
        if res.is("", "secrets") {
            let b64 = base64::engine::general_purpose::STANDARD;
            if let Some(Value::Object(plain)) =
                obj.as_object_mut().and_then(|o| o.remove("stringData"))
            {
                let data = nested(obj, "data");
                for (k, v) in plain {
                    data[&k] = json!(b64.encode(v.as_str().unwrap_or_default()));
                }
            }
            for (k, v) in obj["data"].as_object().into_iter().flatten() {
                if v.as_str().is_none_or(|s| b64.decode(s).is_err()) {
                    return Err(ApiError::bad_request(format!(
                        "Secret in version \"v1\" cannot be handled as a Secret: illegal base64 data (key {k})"
                    )));
                }
            }
            if obj["type"].as_str().unwrap_or_default().is_empty() {
                obj["type"] = json!("Opaque");
            }
        }
        if res.is("", "namespaces") {
            let name = meta(obj, "name").to_string();
            if create {
                nested(obj, "spec")["finalizers"] = json!(["kubernetes"]);
                obj["status"] = json!({"phase": "Active"});
            }
            nested(&mut obj["metadata"], "labels")["kubernetes.io/metadata.name"] = json!(name);
        }
        if res.is("apiextensions.k8s.io", "customresourcedefinitions") {
            let Some(def) = ResourceDef::from_crd(obj) else {
                return Err(ApiError::bad_request(
                    "a CRD needs a group, names and a served version",
                ));
            };
            let names = nested(nested(obj, "spec"), "names");
            if names["singular"].as_str().is_none_or(str::is_empty) {
                names["singular"] = json!(def.kind.to_lowercase());
            }
            names["listKind"] = json!(def.list_kind);
            let names = names.clone();
            let status = nested(obj, "status");
            status["acceptedNames"] = names;
            status["storedVersions"] = json!([def.versions[0]]);
            status["conditions"] = json!([
                {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found", "lastTransitionTime": now()},
                {"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted", "lastTransitionTime": now()},
            ]);
            if let Some(old) = self.resources.get(&(def.group.clone(), def.plural.clone()))
                && !old.custom
            {
                return Err(ApiError::bad_request(
                    "a CRD may not shadow a built-in resource",
                ));
            }
        }
        Ok(())
    }

    // What controllers do: serve CRDs, empty deleted namespaces.

    fn after_write(&mut self, res: &ResourceDef, obj: &Value) {
        if res.is("apiextensions.k8s.io", "customresourcedefinitions")
            && let Some(def) = ResourceDef::from_crd(obj)
        {
            self.resources
                .insert((def.group.clone(), def.plural.clone()), def);
        }
        if res.is("", "namespaces") && deleting(obj) {
            self.purge_namespace(meta(obj, "name"));
        }
        if res.namespaced {
            self.finish_namespace(meta(obj, "namespace"));
        }
    }

    /// Does this Namespace still hold objects (it waits for them to go)?
    fn holds_content(&self, res: &ResourceDef, obj: &Value) -> bool {
        let ns = meta(obj, "name");
        res.is("", "namespaces")
            && self
                .objects
                .iter()
                .filter(|(k, _)| self.resources.get(*k).is_some_and(|r| r.namespaced))
                .any(|(_, m)| m.keys().any(|(n, _)| n == ns))
    }

    /// Deletes the content of a terminating namespace (honouring finalizers).
    fn purge_namespace(&mut self, ns: &str) {
        let mut targets = Vec::new();
        for ((group, plural), objects) in &self.objects {
            for ((n, name), o) in objects {
                if n == ns && !deleting(o) {
                    targets.push((self.ctx(group, plural, ns), name.clone()));
                }
            }
        }
        for (ctx, name) in targets {
            let _ = self.delete(&ctx, &name);
        }
        self.finish_namespace(ns);
    }

    /// A terminating namespace disappears once empty (the namespace controller's work).
    fn finish_namespace(&mut self, ns: &str) {
        let ctx = self.ctx("", "namespaces", "");
        if let Ok(old) = self.get(&ctx, ns)
            && deleting(&old)
            && !self.holds_content(&ctx.res, &old)
        {
            let mut new = old.clone();
            nested(&mut new, "spec")["finalizers"] = json!([]);
            self.commit(&ctx.res, "DELETED", Some(old), new);
        }
    }
}

/// The checks of a body before it is stored: an object, of the resource's kind and group.
fn check_body(obj: &Value, res: &ResourceDef) -> Result<(), ApiError> {
    if !obj.is_object() || !(obj["metadata"].is_object() || obj["metadata"].is_null()) {
        return Err(ApiError::bad_request(
            "the body of the request must be an object with object metadata",
        ));
    }
    if !matches!(obj["kind"].as_str(), None | Some("")) && obj["kind"] != res.kind.as_str() {
        return Err(ApiError::bad_request(format!(
            "the kind of the object ({}) does not match the kind of the request ({})",
            obj["kind"], res.kind
        )));
    }
    if let Some(av) = obj["apiVersion"].as_str().filter(|a| !a.is_empty()) {
        let (group, version) = av.rsplit_once('/').unwrap_or(("", av));
        if group != res.group || !res.serves(version) {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({av}) does not match the expected API version"
            )));
        }
    }
    Ok(())
}

/// One line of a watch stream.
pub(crate) fn watch_line(typ: &str, obj: &Value) -> Bytes {
    let mut s = json!({"type": typ, "object": obj}).to_string();
    s.push('\n');
    Bytes::from(s)
}

/// A bookmark object for a resource at a revision.
pub(crate) fn bookmark(res: &ResourceDef, version: &str, rv: u64) -> Value {
    json!({"kind": res.kind, "apiVersion": res.api_version(version),
           "metadata": {"resourceVersion": rv.to_string(), "creationTimestamp": null}})
}

/// kube-apiserver refuses an update that adds a finalizer to an object being deleted.
fn no_finalizer_added_while_deleting(
    res: &ResourceDef,
    name: &str,
    old: &Value,
    new: &Value,
) -> Result<(), ApiError> {
    if !deleting(old) {
        return Ok(());
    }
    let added: Vec<String> = finalizers(new)
        .into_iter()
        .filter(|f| !finalizers(old).contains(f))
        .map(|f| format!("{f:?}"))
        .collect();
    if added.is_empty() {
        return Ok(());
    }
    let body = format!(
        "Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers []string{{{}}}",
        added.join(", ")
    );
    Err(ApiError::invalid(
        res,
        name,
        "metadata.finalizers",
        "FieldValueForbidden",
        &body,
    ))
}
