//! The object store: a single revisioned keyspace (like etcd), the write
//! pipeline (admission, generation, finalizers, no-op detection), watch
//! fan-out and the namespace / CRD "controllers".

use crate::errors::{ApiError, FieldErr, FieldErrKind, ResRef};
use crate::resources::ResourceDef;
use crate::selectors::{FieldSelector, LabelSelector};
use crate::ssa::{self, Scope, Types};
use crate::{Fault, RecordedRequest};
use axum::body::Bytes;
use base64::Engine;
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, VecDeque};
use tokio::sync::mpsc;

pub(crate) type ResKey = (String, String);
type ObjKey = (String, String);

/// A change in the keyspace, kept for watch resumption.
#[derive(Debug, Clone)]
pub(crate) struct HistEvent {
    pub rv: u64,
    pub key: ResKey,
    pub typ: &'static str,
    pub old: Option<Value>,
    pub new: Value,
}

/// An open watch stream.
pub(crate) struct Watcher {
    pub id: u64,
    pub key: ResKey,
    pub namespace: Option<String>,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    pub version: String,
    pub meta_only: bool,
    pub tx: mpsc::UnboundedSender<Bytes>,
}

/// How a write records `managedFields`.
#[derive(Clone, Debug)]
pub(crate) enum Manage {
    /// A non-apply write by this manager.
    Update(String),
    /// `managedFields` were already computed by server-side apply.
    Applied,
}

/// Per-request context for a write.
#[derive(Clone, Debug)]
pub(crate) struct Ctx {
    pub res: ResourceDef,
    pub version: String,
    pub namespace: Option<String>,
    pub subresource: Option<String>,
    pub dry_run: bool,
    pub strict: bool,
}

impl Ctx {
    fn ns(&self) -> String {
        self.namespace.clone().unwrap_or_default()
    }
    fn is_status(&self) -> bool {
        self.subresource.as_deref() == Some("status")
    }
    pub fn scope(&self) -> Scope {
        if self.is_status() {
            Scope::StatusOnly
        } else if self.res.has_status(&self.version) {
            Scope::NoStatus
        } else {
            Scope::All
        }
    }
}

/// The whole server state, guarded by one mutex.
pub(crate) struct Store {
    pub rv: u64,
    pub resources: BTreeMap<ResKey, ResourceDef>,
    pub objects: BTreeMap<ResKey, BTreeMap<ObjKey, Value>>,
    pub history: VecDeque<HistEvent>,
    pub history_cap: usize,
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

fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj.get("metadata")
        .and_then(|m| m.get(field))
        .and_then(|v| v.as_str())
}

fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.get("metadata").is_some_and(|m| m.is_object()) {
        obj["metadata"] = json!({});
    }
    obj["metadata"]
        .as_object_mut()
        .expect("metadata is an object")
}

fn finalizers(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/finalizers")
        .and_then(|f| f.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// `obj[key]` as an object (replacing a non-object value).
fn obj_field<'a>(obj: &'a mut Value, key: &str) -> &'a mut Value {
    if !obj.get(key).is_some_and(|v| v.is_object()) {
        obj[key] = json!({});
    }
    &mut obj[key]
}

/// Decodes a built-in object into its typed form, as the real server does
/// (type errors answer 400 BadRequest).
fn decode_check(res: &ResourceDef, obj: &Value) -> Result<(), ApiError> {
    use k8s_openapi::api::{coordination, core, events};
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    fn check<T: serde::de::DeserializeOwned>(obj: &Value) -> Result<(), String> {
        serde_json::from_value::<T>(obj.clone())
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
    let r = match (res.group.as_str(), res.plural.as_str()) {
        ("", "namespaces") => check::<core::v1::Namespace>(obj),
        ("", "secrets") => check::<core::v1::Secret>(obj),
        ("", "configmaps") => check::<core::v1::ConfigMap>(obj),
        ("", "events") => check::<core::v1::Event>(obj),
        ("events.k8s.io", "events") => check::<events::v1::Event>(obj),
        ("coordination.k8s.io", "leases") => check::<coordination::v1::Lease>(obj),
        ("apiextensions.k8s.io", "customresourcedefinitions") => {
            check::<CustomResourceDefinition>(obj)
        }
        _ => Ok(()),
    };
    r.map_err(|e| {
        ApiError::bad_request(format!(
            "{} in version \"{}\" cannot be handled as a {}: {e}",
            res.kind,
            res.storage_version().name,
            res.kind
        ))
    })
}

/// Drops empty/null optional metadata fields (Go's `omitempty`).
fn normalize_meta(obj: &mut Value) {
    let m = meta_mut(obj);
    m.retain(|_, v| !v.is_null());
    for k in ["labels", "annotations"] {
        if m.get(k)
            .and_then(|v| v.as_object())
            .is_some_and(|o| o.is_empty())
        {
            m.remove(k);
        }
    }
    for k in ["finalizers", "ownerReferences", "managedFields"] {
        if m.get(k)
            .and_then(|v| v.as_array())
            .is_some_and(|o| o.is_empty())
        {
            m.remove(k);
        }
    }
    if m.get("generateName").and_then(|v| v.as_str()) == Some("") {
        m.remove("generateName");
    }
}

/// Everything except metadata and status, for generation tracking.
fn spec_part(obj: &Value) -> Value {
    let mut o = obj.clone();
    if let Some(m) = o.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
        m.remove("apiVersion");
        m.remove("kind");
    }
    o
}

const PROTECTED_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public", "kube-node-lease"];
const CRD_FINALIZER: &str = "customresourcecleanup.apiextensions.k8s.io";

impl Store {
    pub fn new() -> Self {
        let mut s = Store {
            rv: 1,
            resources: BTreeMap::new(),
            objects: BTreeMap::new(),
            history: VecDeque::new(),
            history_cap: 10_000,
            compacted_rv: 0,
            watchers: Vec::new(),
            next_watch_id: 1,
            requests: Vec::new(),
            faults: Vec::new(),
        };
        for r in ResourceDef::builtins() {
            s.resources.insert((r.group.clone(), r.plural.clone()), r);
        }
        let ns_def = s.resources[&(String::new(), "namespaces".to_string())].clone();
        for ns in PROTECTED_NAMESPACES {
            let ctx = Ctx {
                res: ns_def.clone(),
                version: "v1".into(),
                namespace: None,
                subresource: None,
                dry_run: false,
                strict: false,
            };
            let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
            s.create(&ctx, body, Manage::Update("kube-apiserver".into()))
                .expect("bootstrap namespace");
        }
        s
    }

    pub fn find_resource(&self, group: &str, version: &str, plural: &str) -> Option<&ResourceDef> {
        self.resources
            .get(&(group.to_string(), plural.to_string()))
            .filter(|r| r.version(version).is_some())
    }

    fn schema_for<'a>(&self, res: &'a ResourceDef, version: &str) -> Option<&'a Value> {
        res.version(version).and_then(|v| v.schema.as_ref())
    }

    /// Renders a stored object for a client (served version, metadata-only).
    pub fn render(res: &ResourceDef, obj: &Value, version: &str, meta_only: bool) -> Value {
        if meta_only {
            return json!({
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": obj.get("metadata").cloned().unwrap_or(json!({})),
            });
        }
        let mut o = obj.clone();
        o["apiVersion"] = json!(res.api_version(version));
        o
    }

    fn namespace_state(&self, ns: &str) -> Option<&Value> {
        self.objects
            .get(&(String::new(), "namespaces".to_string()))
            .and_then(|m| m.get(&(String::new(), ns.to_string())))
    }

    pub fn get(&self, res: &ResourceDef, ns: &str, name: &str) -> Option<&Value> {
        self.objects
            .get(&(res.group.clone(), res.plural.clone()))
            .and_then(|m| m.get(&(ns.to_string(), name.to_string())))
    }

    pub fn get_or_404(&self, ctx: &Ctx, name: &str) -> Result<Value, ApiError> {
        self.get(&ctx.res, &ctx.ns(), name)
            .cloned()
            .ok_or_else(|| ApiError::not_found(&ctx.res.res_ref(), name))
    }

    /// Objects of a resource in key order, optionally in one namespace.
    pub fn list(&self, res: &ResourceDef, ns: Option<&str>) -> Vec<&Value> {
        self.objects
            .get(&(res.group.clone(), res.plural.clone()))
            .map(|m| {
                m.iter()
                    .filter(|((ons, _), _)| ns.is_none_or(|n| n == ons))
                    .map(|(_, v)| v)
                    .collect()
            })
            .unwrap_or_default()
    }

    // ------------------------------------------------------------------
    // Commit and watch fan-out

    fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    fn commit(&mut self, key: ResKey, typ: &'static str, old: Option<Value>, new: Value) {
        let rv = self.rv;
        let ok: ObjKey = (
            meta_str(&new, "namespace").unwrap_or_default().to_string(),
            meta_str(&new, "name").unwrap_or_default().to_string(),
        );
        let objs = self.objects.entry(key.clone()).or_default();
        if typ == "DELETED" {
            objs.remove(&ok);
        } else {
            objs.insert(ok, new.clone());
        }
        let ev = HistEvent {
            rv,
            key,
            typ,
            old,
            new,
        };
        self.notify(&ev);
        self.history.push_back(ev);
        while self.history.len() > self.history_cap {
            if let Some(e) = self.history.pop_front() {
                self.compacted_rv = e.rv;
            }
        }
    }

    /// Discards all history (like an etcd compaction): watches from an older
    /// resourceVersion then get `410 Gone`.
    pub fn compact(&mut self) {
        self.history.clear();
        self.compacted_rv = self.rv;
    }

    /// What a watcher with this filter sees for an event (type + object).
    pub fn translate(&self, w: &Watcher, ev: &HistEvent) -> Option<(&'static str, Value)> {
        if w.key != ev.key {
            return None;
        }
        let in_ns = |o: &Value| {
            w.namespace
                .as_deref()
                .is_none_or(|n| meta_str(o, "namespace").unwrap_or_default() == n)
        };
        let matches = |o: &Value| in_ns(o) && w.labels.matches_obj(o) && w.fields.matches_obj(o);
        let res = self.resources.get(&w.key)?;
        let typ = match ev.typ {
            "ADDED" => matches(&ev.new).then_some("ADDED")?,
            "DELETED" => matches(&ev.new).then_some("DELETED")?,
            _ => {
                let was = ev.old.as_ref().is_some_and(matches);
                match (was, matches(&ev.new)) {
                    (true, true) => "MODIFIED",
                    (false, true) => "ADDED",
                    (true, false) => "DELETED",
                    (false, false) => return None,
                }
            }
        };
        Some((typ, Self::render(res, &ev.new, &w.version, w.meta_only)))
    }

    fn notify(&mut self, ev: &HistEvent) {
        let mut dead = Vec::new();
        for w in &self.watchers {
            if let Some((typ, obj)) = self.translate(w, ev)
                && w.tx.send(watch_line(typ, &obj)).is_err()
            {
                dead.push(w.id);
            }
        }
        if !dead.is_empty() {
            self.watchers.retain(|w| !dead.contains(&w.id));
        }
    }

    // ------------------------------------------------------------------
    // Writes

    /// Creates an object (POST, or apply/PUT of a missing object).
    pub fn create(&mut self, ctx: &Ctx, mut obj: Value, manage: Manage) -> Result<Value, ApiError> {
        let res = &ctx.res;
        let rref = res.res_ref();
        if !obj.is_object() {
            return Err(ApiError::bad_request(
                "the body of the request must be an object",
            ));
        }
        check_type_meta(&obj, res, &ctx.version)?;
        check_meta_object(&obj)?;
        if res.terminating {
            return Err(ApiError::method_not_allowed(
                "create not allowed while custom resource definition is terminating",
            ));
        }
        obj["apiVersion"] = json!(res.api_version(&res.storage_version().name));
        obj["kind"] = json!(res.kind);
        {
            let m = meta_mut(&mut obj);
            if m.get("name")
                .and_then(|n| n.as_str())
                .unwrap_or_default()
                .is_empty()
                && let Some(g) = m
                    .get("generateName")
                    .and_then(|g| g.as_str())
                    .filter(|g| !g.is_empty())
            {
                let name = format!("{g}{}", crate::validation::random_suffix());
                m.insert("name".into(), json!(name));
            }
        }
        let name = meta_str(&obj, "name").unwrap_or_default().to_string();
        // Namespace handling.
        if res.namespaced {
            let ns = ctx.ns();
            if let Some(bns) = meta_str(&obj, "namespace").filter(|n| !n.is_empty())
                && bns != ns
            {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            meta_mut(&mut obj).insert("namespace".into(), json!(ns));
            match self.namespace_state(&ns) {
                None => return Err(ApiError::namespace_not_found(&ns)),
                Some(n) if n.pointer("/metadata/deletionTimestamp").is_some() => {
                    return Err(ApiError::forbidden(
                        &rref,
                        &name,
                        format!("unable to create new content in namespace {ns} because it is being terminated"),
                    )
                    .with_details(json!({
                        "name": name, "group": res.group, "kind": res.plural,
                        "causes": [{"reason": "NamespaceTerminating", "message": format!("namespace {ns} is being terminated"), "field": "metadata.namespace"}]
                    })));
                }
                _ => {}
            }
        } else {
            meta_mut(&mut obj).remove("namespace");
        }
        // System metadata.
        let ts = now();
        {
            let m = meta_mut(&mut obj);
            for k in [
                "uid",
                "resourceVersion",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
                "selfLink",
            ] {
                m.remove(k);
            }
            if !matches!(manage, Manage::Applied) {
                m.remove("managedFields");
            }
            m.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
            m.insert("creationTimestamp".into(), json!(ts));
            if res.generation {
                m.insert("generation".into(), json!(1));
            }
        }
        if res.has_status(&ctx.version) && res.custom {
            // Create cannot set status when the status subresource is enabled.
            if let Some(m) = obj.as_object_mut() {
                m.remove("status");
            }
        }
        normalize_meta(&mut obj);
        self.admit(ctx, &mut obj, None, &name)?;
        if let Manage::Update(mgr) = &manage {
            ssa::record_update(
                &mut obj,
                None,
                mgr,
                None,
                &res.api_version(&ctx.version),
                &ts,
                Types {
                    schema: self.schema_for(res, &ctx.version),
                },
                Scope::All,
            );
        }
        if self.get(res, &ctx.ns(), &name).is_some() {
            return Err(ApiError::already_exists(&rref, &name));
        }
        if ctx.dry_run {
            return Ok(obj);
        }
        let rv = self.next_rv();
        meta_mut(&mut obj).insert("resourceVersion".into(), json!(rv.to_string()));
        self.commit(
            (res.group.clone(), res.plural.clone()),
            "ADDED",
            None,
            obj.clone(),
        );
        self.after_write(res, None, &obj);
        Ok(obj)
    }

    /// Replaces an object with `new` (PUT, or the result of a patch/apply).
    /// `new` carries the client's metadata.resourceVersion (precondition).
    pub fn update(
        &mut self,
        ctx: &Ctx,
        name: &str,
        mut new: Value,
        manage: Manage,
    ) -> Result<Value, ApiError> {
        let res = ctx.res.clone();
        let rref = res.res_ref();
        if !new.is_object() {
            return Err(ApiError::bad_request(
                "the body of the request must be an object",
            ));
        }
        check_type_meta(&new, &res, &ctx.version)?;
        check_meta_object(&new)?;
        let body_name = meta_str(&new, "name").unwrap_or_default().to_string();
        if !body_name.is_empty() && body_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        if res.namespaced
            && let Some(bns) = meta_str(&new, "namespace").filter(|n| !n.is_empty())
            && bns != ctx.ns()
        {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        let Some(old) = self.get(&res, &ctx.ns(), name).cloned() else {
            if res.create_on_update && !ctx.is_status() {
                meta_mut(&mut new).insert("name".into(), json!(name));
                return self.create(ctx, new, manage);
            }
            return Err(ApiError::not_found(&rref, name));
        };
        // Preconditions.
        if let Some(rv) = meta_str(&new, "resourceVersion").filter(|r| !r.is_empty())
            && Some(rv) != meta_str(&old, "resourceVersion")
        {
            return Err(ApiError::stale(&rref, name));
        }
        if let Some(uid) = meta_str(&new, "uid").filter(|r| !r.is_empty())
            && Some(uid) != meta_str(&old, "uid")
        {
            return Err(ApiError::conflict(
                &rref,
                name,
                format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    meta_str(&old, "uid").unwrap_or_default()
                ),
            ));
        }
        // Build the candidate object.
        let sub = ctx.subresource.as_deref();
        if sub == Some("status") {
            let mut cand = old.clone();
            match new.get("status") {
                Some(s) => cand["status"] = s.clone(),
                None => {
                    if let Some(m) = cand.as_object_mut() {
                        m.remove("status");
                    }
                }
            }
            if matches!(manage, Manage::Applied) {
                let mf = new.pointer("/metadata/managedFields").cloned();
                match mf {
                    Some(mf) => meta_mut(&mut cand).insert("managedFields".into(), mf),
                    None => meta_mut(&mut cand).remove("managedFields"),
                };
            }
            new = cand;
        } else if sub == Some("finalize") {
            let mut cand = old.clone();
            obj_field(&mut cand, "spec")["finalizers"] = new
                .pointer("/spec/finalizers")
                .cloned()
                .unwrap_or(json!([]));
            new = cand;
        } else {
            if res.has_status(&ctx.version) {
                match old.get("status") {
                    Some(s) => new["status"] = s.clone(),
                    None => {
                        if let Some(m) = new.as_object_mut() {
                            m.remove("status");
                        }
                    }
                }
            }
            let keep_mf = matches!(manage, Manage::Applied);
            let om = old.get("metadata").cloned().unwrap_or(json!({}));
            let m = meta_mut(&mut new);
            for k in [
                "name",
                "namespace",
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
                "selfLink",
            ] {
                match om.get(k) {
                    Some(v) => m.insert(k.into(), v.clone()),
                    None => m.remove(k),
                };
            }
            if !keep_mf {
                match om.get("managedFields") {
                    Some(v) => m.insert("managedFields".into(), v.clone()),
                    None => m.remove("managedFields"),
                };
            }
        }
        new["apiVersion"] = json!(res.api_version(&res.storage_version().name));
        new["kind"] = json!(res.kind);
        meta_mut(&mut new).insert(
            "resourceVersion".into(),
            old.pointer("/metadata/resourceVersion")
                .cloned()
                .unwrap_or(json!("")),
        );
        normalize_meta(&mut new);
        // Finalizers cannot be added while deleting.
        if old.pointer("/metadata/deletionTimestamp").is_some() {
            let of = finalizers(&old);
            let added: Vec<String> = finalizers(&new)
                .into_iter()
                .filter(|f| !of.contains(f))
                .collect();
            if !added.is_empty() {
                return Err(ApiError::invalid(
                    &rref,
                    name,
                    &[FieldErr::forbidden(
                        "metadata.finalizers",
                        format!(
                            "no new finalizers can be added if the object is being deleted, found new finalizers []string{{{}}}",
                            added
                                .iter()
                                .map(|f| format!("{f:?}"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    )],
                ));
            }
        }
        self.admit(ctx, &mut new, Some(&old), name)?;
        let ts = now();
        if let Manage::Update(mgr) = &manage {
            ssa::record_update(
                &mut new,
                Some(&old),
                mgr,
                sub,
                &res.api_version(&ctx.version),
                &ts,
                Types {
                    schema: self.schema_for(&res, &ctx.version),
                },
                ctx.scope(),
            );
        }
        if res.generation && spec_part(&new) != spec_part(&old) {
            let g = old
                .pointer("/metadata/generation")
                .and_then(|g| g.as_i64())
                .unwrap_or(0);
            meta_mut(&mut new).insert("generation".into(), json!(g + 1));
        }
        if new == old {
            return Ok(old);
        }
        if ctx.dry_run {
            return Ok(new);
        }
        let rv = self.next_rv();
        meta_mut(&mut new).insert("resourceVersion".into(), json!(rv.to_string()));
        let key = (res.group.clone(), res.plural.clone());
        if new.pointer("/metadata/deletionTimestamp").is_some()
            && finalizers(&new).is_empty()
            && !self.blocks_removal(&res, &new)
        {
            self.commit(key, "DELETED", Some(old.clone()), new.clone());
            self.after_delete(&res, &new);
        } else {
            self.commit(key, "MODIFIED", Some(old.clone()), new.clone());
            self.after_write(&res, Some(&old), &new);
        }
        Ok(new)
    }

    /// Namespaces wait for `spec.finalizers` and their content.
    fn blocks_removal(&self, res: &ResourceDef, obj: &Value) -> bool {
        if !res.custom && res.plural == "namespaces" && res.group.is_empty() {
            let ns = meta_str(obj, "name").unwrap_or_default();
            return !self.namespace_empty(ns);
        }
        false
    }

    fn namespace_empty(&self, ns: &str) -> bool {
        self.objects
            .iter()
            .filter(|(k, _)| self.resources.get(*k).is_none_or(|r| r.namespaced))
            .all(|(_, m)| !m.keys().any(|(n, _)| n == ns))
    }

    /// Deletes an object, honouring finalizers and preconditions.
    pub fn delete(&mut self, ctx: &Ctx, name: &str, opts: &Value) -> Result<Value, ApiError> {
        let res = ctx.res.clone();
        let rref = res.res_ref();
        let old = self.get_or_404(ctx, name)?;
        if let Some(uid) = opts.pointer("/preconditions/uid").and_then(|u| u.as_str())
            && Some(uid) != meta_str(&old, "uid")
        {
            return Err(ApiError::conflict(
                &rref,
                name,
                format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    meta_str(&old, "uid").unwrap_or_default()
                ),
            ));
        }
        if let Some(rv) = opts
            .pointer("/preconditions/resourceVersion")
            .and_then(|u| u.as_str())
            && Some(rv) != meta_str(&old, "resourceVersion")
        {
            return Err(ApiError::conflict(
                &rref,
                name,
                format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                    meta_str(&old, "resourceVersion").unwrap_or_default()
                ),
            ));
        }
        let is_ns = !res.custom && res.group.is_empty() && res.plural == "namespaces";
        if is_ns && PROTECTED_NAMESPACES.contains(&name) {
            return Err(ApiError::forbidden(
                &rref,
                name,
                "this namespace may not be deleted",
            ));
        }
        if old.pointer("/metadata/deletionTimestamp").is_some() {
            // Already being deleted: nothing changes.
            return Ok(old);
        }
        let key = (res.group.clone(), res.plural.clone());
        let graceful = !finalizers(&old).is_empty() || is_ns;
        if ctx.dry_run {
            return Ok(old);
        }
        if graceful {
            let mut new = old.clone();
            {
                let m = meta_mut(&mut new);
                m.insert("deletionTimestamp".into(), json!(now()));
                m.insert("deletionGracePeriodSeconds".into(), json!(0));
                if let Some(g) = m.get("generation").and_then(|g| g.as_i64())
                    && g > 0
                {
                    m.insert("generation".into(), json!(g + 1));
                }
            }
            if is_ns {
                obj_field(&mut new, "status")["phase"] = json!("Terminating");
            }
            if res.group == "apiextensions.k8s.io" && res.plural == "customresourcedefinitions" {
                set_condition(
                    &mut new,
                    "Terminating",
                    "True",
                    "InstanceDeletionInProgress",
                    "CustomResource deletion is in progress",
                );
            }
            let rv = self.next_rv();
            meta_mut(&mut new).insert("resourceVersion".into(), json!(rv.to_string()));
            self.commit(key, "MODIFIED", Some(old.clone()), new.clone());
            self.after_write(&res, Some(&old), &new);
            Ok(new)
        } else {
            let mut new = old.clone();
            let rv = self.next_rv();
            meta_mut(&mut new).insert("resourceVersion".into(), json!(rv.to_string()));
            self.commit(key, "DELETED", Some(old), new.clone());
            self.after_delete(&res, &new);
            Ok(new)
        }
    }

    // ------------------------------------------------------------------
    // Admission

    fn admit(
        &mut self,
        ctx: &Ctx,
        obj: &mut Value,
        old: Option<&Value>,
        name: &str,
    ) -> Result<(), ApiError> {
        let res = &ctx.res;
        let rref = res.res_ref();
        let is = |g: &str, p: &str| !res.custom && res.group == g && res.plural == p;
        let mut errs = Vec::new();
        if !res.custom {
            decode_check(res, obj)?;
        }
        // Type-specific mutation.
        if is("", "secrets") {
            secret_mutate(obj).map_err(ApiError::bad_request)?;
        }
        if is("", "namespaces") {
            let n = meta_str(obj, "name").unwrap_or_default().to_string();
            if old.is_none() {
                obj_field(obj, "spec")["finalizers"] = json!(["kubernetes"]);
                obj["status"] = json!({"phase": "Active"});
            }
            if crate::validation::label_key_error(&n).is_none()
                && crate::validation::label_value_error(&n).is_none()
            {
                meta_mut(obj)
                    .entry("labels")
                    .or_insert(json!({}))
                    .as_object_mut()
                    .map(|l| l.insert("kubernetes.io/metadata.name".into(), json!(n)));
            }
        }
        if is("apiextensions.k8s.io", "customresourcedefinitions") {
            errs.extend(crd_mutate_validate(obj, old.is_none()));
        }
        errs.extend(crate::validation::validate_meta(obj, is("", "namespaces")));
        if is("events.k8s.io", "events") && old.is_none() {
            errs.extend(validate_event_v1(obj));
        }
        if is("coordination.k8s.io", "leases") {
            for f in ["leaseDurationSeconds", "leaseTransitions"] {
                if let Some(v) = obj.pointer(&format!("/spec/{f}")).and_then(|v| v.as_i64()) {
                    let bad = if f == "leaseDurationSeconds" {
                        v <= 0
                    } else {
                        v < 0
                    };
                    if bad {
                        let cmp = if f == "leaseDurationSeconds" {
                            "must be greater than 0"
                        } else {
                            "must be greater than or equal to 0"
                        };
                        errs.push(FieldErr::invalid(format!("spec.{f}"), json!(v), cmp));
                    }
                }
            }
        }
        if is("", "configmaps") {
            for f in ["data", "binaryData"] {
                if let Some(d) = obj.get(f).and_then(|d| d.as_object()) {
                    for k in d.keys() {
                        if !valid_config_key(k) {
                            errs.push(FieldErr::invalid(
                                format!("{f}[{k}]"),
                                json!(k),
                                "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')",
                            ));
                        }
                    }
                }
            }
        }
        if res.custom
            && let Some(schema) = self.schema_for(res, &ctx.version).cloned()
        {
            match crate::schema::admit(&schema, obj, old, ctx.strict) {
                Ok(()) => {}
                Err((e, true)) => {
                    let fields: Vec<String> = e
                        .iter()
                        .map(|e| format!("unknown field \"{}\"", e.field))
                        .collect();
                    return Err(ApiError::bad_request(format!(
                        "{} in version \"{}\" cannot be handled as a {}: strict decoding error: {}",
                        res.kind,
                        ctx.version,
                        res.kind,
                        fields.join(", ")
                    )));
                }
                Err((e, false)) => errs.extend(e),
            }
        }
        if !errs.is_empty() {
            return Err(ApiError::invalid(&rref, name, &errs));
        }
        Ok(())
    }

    // ------------------------------------------------------------------
    // Controllers: CRD serving, namespace and CRD termination.

    fn after_write(&mut self, res: &ResourceDef, _old: Option<&Value>, new: &Value) {
        if !res.custom
            && res.group == "apiextensions.k8s.io"
            && res.plural == "customresourcedefinitions"
        {
            self.sync_crd(new);
        }
        let is_ns = !res.custom && res.group.is_empty() && res.plural == "namespaces";
        if is_ns && new.pointer("/metadata/deletionTimestamp").is_some() {
            let ns = meta_str(new, "name").unwrap_or_default().to_string();
            self.purge_namespace(&ns);
        }
        self.reconcile();
    }

    fn after_delete(&mut self, res: &ResourceDef, obj: &Value) {
        if !res.custom
            && res.group == "apiextensions.k8s.io"
            && res.plural == "customresourcedefinitions"
            && let Some(d) = ResourceDef::from_crd(obj)
        {
            let key = (d.group.clone(), d.plural.clone());
            if self.resources.get(&key).is_some_and(|r| r.custom) {
                self.resources.remove(&key);
                self.objects.remove(&key);
                self.watchers.retain(|w| w.key != key);
            }
        }
        self.reconcile();
    }

    fn sync_crd(&mut self, crd: &Value) {
        let Some(mut def) = ResourceDef::from_crd(crd) else {
            return;
        };
        let key = (def.group.clone(), def.plural.clone());
        if self.resources.get(&key).is_some_and(|r| !r.custom) {
            return; // never shadow a built-in
        }
        def.terminating = crd.pointer("/metadata/deletionTimestamp").is_some();
        let terminating = def.terminating;
        self.resources.insert(key.clone(), def.clone());
        if terminating {
            let objs: Vec<(String, String)> = self
                .objects
                .get(&key)
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default();
            for (ns, name) in objs {
                let ctx = Ctx {
                    res: def.clone(),
                    version: def.storage_version().name.clone(),
                    namespace: Some(ns),
                    subresource: None,
                    dry_run: false,
                    strict: false,
                };
                let _ = self.delete(&ctx, &name, &json!({}));
            }
        }
    }

    fn purge_namespace(&mut self, ns: &str) {
        let targets: Vec<(ResourceDef, String)> = self
            .objects
            .iter()
            .filter_map(|(k, m)| {
                self.resources
                    .get(k)
                    .filter(|r| r.namespaced)
                    .map(|r| (r.clone(), m))
            })
            .flat_map(|(r, m)| {
                m.iter()
                    .filter(|((n, _), o)| {
                        n == ns && o.pointer("/metadata/deletionTimestamp").is_none()
                    })
                    .map(move |((_, name), _)| (r.clone(), name.clone()))
            })
            .collect();
        for (res, name) in targets {
            let ctx = Ctx {
                version: res.storage_version().name.clone(),
                res,
                namespace: Some(ns.to_string()),
                subresource: None,
                dry_run: false,
                strict: false,
            };
            let _ = self.delete(&ctx, &name, &json!({}));
        }
    }

    /// Finishes namespace and CRD deletions whose content is gone.
    fn reconcile(&mut self) {
        // Terminating namespaces without content disappear.
        let ns_key = (String::new(), "namespaces".to_string());
        let done: Vec<Value> = self
            .objects
            .get(&ns_key)
            .map(|m| {
                m.values()
                    .filter(|o| o.pointer("/metadata/deletionTimestamp").is_some())
                    .filter(|o| finalizers(o).is_empty())
                    .filter(|o| self.namespace_empty(meta_str(o, "name").unwrap_or_default()))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        for old in done {
            let mut new = old.clone();
            new["spec"]["finalizers"] = json!([]);
            if let Some(s) = new.get_mut("spec").and_then(|s| s.as_object_mut()) {
                s.remove("finalizers");
            }
            let rv = self.next_rv();
            meta_mut(&mut new).insert("resourceVersion".into(), json!(rv.to_string()));
            self.commit(ns_key.clone(), "DELETED", Some(old), new);
        }
        // Terminating CRDs without instances lose their cleanup finalizer.
        let crd_key = (
            "apiextensions.k8s.io".to_string(),
            "customresourcedefinitions".to_string(),
        );
        let crds: Vec<Value> = self
            .objects
            .get(&crd_key)
            .map(|m| {
                m.values()
                    .filter(|o| o.pointer("/metadata/deletionTimestamp").is_some())
                    .filter(|o| finalizers(o).iter().any(|f| f == CRD_FINALIZER))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        for old in crds {
            let Some(def) = ResourceDef::from_crd(&old) else {
                continue;
            };
            let empty = self
                .objects
                .get(&(def.group.clone(), def.plural.clone()))
                .is_none_or(|m| m.is_empty());
            if !empty {
                continue;
            }
            let mut new = old.clone();
            let fins: Vec<String> = finalizers(&old)
                .into_iter()
                .filter(|f| f != CRD_FINALIZER)
                .collect();
            meta_mut(&mut new).insert("finalizers".into(), json!(fins));
            normalize_meta(&mut new);
            let rv = self.next_rv();
            meta_mut(&mut new).insert("resourceVersion".into(), json!(rv.to_string()));
            let gone = fins.is_empty();
            let typ = if gone { "DELETED" } else { "MODIFIED" };
            self.commit(crd_key.clone(), typ, Some(old), new.clone());
            if gone {
                let key = (def.group.clone(), def.plural.clone());
                self.resources.remove(&key);
                self.objects.remove(&key);
                self.watchers.retain(|w| w.key != key);
            }
        }
    }
}

fn set_condition(obj: &mut Value, typ: &str, status: &str, reason: &str, message: &str) {
    if !obj.get("status").is_some_and(|s| s.is_object()) {
        obj["status"] = json!({});
    }
    let conds = obj["status"]
        .as_object_mut()
        .expect("status object")
        .entry("conditions")
        .or_insert(json!([]));
    if !conds.is_array() {
        *conds = json!([]);
    }
    let arr = conds.as_array_mut().expect("array");
    let c = json!({"type": typ, "status": status, "lastTransitionTime": now(), "reason": reason, "message": message});
    match arr
        .iter_mut()
        .find(|x| x.get("type").and_then(|t| t.as_str()) == Some(typ))
    {
        Some(x) => {
            if x.get("status").and_then(|s| s.as_str()) != Some(status) {
                *x = c;
            }
        }
        None => arr.push(c),
    }
}

fn check_meta_object(obj: &Value) -> Result<(), ApiError> {
    match obj.get("metadata") {
        None | Some(Value::Object(_)) | Some(Value::Null) => Ok(()),
        Some(_) => Err(ApiError::bad_request(
            "json: cannot unmarshal into Go struct field .metadata of type v1.ObjectMeta",
        )),
    }
}

fn check_type_meta(obj: &Value, res: &ResourceDef, version: &str) -> Result<(), ApiError> {
    if let Some(k) = obj.get("kind").and_then(|k| k.as_str())
        && !k.is_empty()
        && k != res.kind
    {
        return Err(ApiError::bad_request(format!(
            "the kind of the object ({k}) does not match the kind of the request ({})",
            res.kind
        )));
    }
    if let Some(av) = obj.get("apiVersion").and_then(|k| k.as_str())
        && !av.is_empty()
    {
        let (g, v) = match av.rsplit_once('/') {
            Some((g, v)) => (g, v),
            None => ("", av),
        };
        if g != res.group || res.version(v).is_none() {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({av}) does not match the expected API version ({})",
                res.api_version(version)
            )));
        }
    }
    Ok(())
}

fn valid_config_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 253
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && k != "."
        && k != ".."
}

fn secret_mutate(obj: &mut Value) -> Result<(), String> {
    let b64 = base64::engine::general_purpose::STANDARD;
    if let Some(Value::Object(sd)) = obj.as_object_mut().and_then(|m| m.remove("stringData")) {
        if !obj.get("data").is_some_and(|d| d.is_object()) {
            obj["data"] = json!({});
        }
        let data = obj["data"].as_object_mut().expect("data object");
        for (k, v) in sd {
            data.insert(k, json!(b64.encode(v.as_str().unwrap_or_default())));
        }
    }
    if let Some(data) = obj.get("data").and_then(|d| d.as_object()) {
        for (k, v) in data {
            let s = v.as_str().ok_or_else(|| format!("Secret in version \"v1\" cannot be handled as a Secret: data[{k}] must be a base64 string"))?;
            if b64.decode(s).is_err() {
                return Err(format!(
                    "Secret in version \"v1\" cannot be handled as a Secret: illegal base64 data at input byte 0 (key {k})"
                ));
            }
        }
    }
    if obj
        .get("type")
        .and_then(|t| t.as_str())
        .unwrap_or_default()
        .is_empty()
    {
        obj["type"] = json!("Opaque");
    }
    Ok(())
}

fn validate_event_v1(obj: &Value) -> Vec<FieldErr> {
    let mut errs = Vec::new();
    let s = |f: &str| obj.get(f).and_then(|v| v.as_str()).unwrap_or_default();
    if obj.get("eventTime").is_none_or(|v| v.is_null()) {
        errs.push(FieldErr::required("eventTime", ""));
    }
    for f in [
        "reportingController",
        "reportingInstance",
        "action",
        "reason",
    ] {
        if s(f).is_empty() {
            errs.push(FieldErr::required(f, ""));
        }
    }
    let t = s("type");
    if t != "Normal" && t != "Warning" {
        errs.push(FieldErr::new(
            FieldErrKind::NotSupported,
            "type",
            Some(json!(t)),
            "supported values: \"Normal\", \"Warning\"",
        ));
    }
    if s("note").len() > 1024 {
        errs.push(FieldErr::new(
            FieldErrKind::TooLong,
            "note",
            None,
            "may not be more than 1024 bytes",
        ));
    }
    for f in ["action", "reason"] {
        if s(f).len() > 128 {
            errs.push(FieldErr::new(
                FieldErrKind::TooLong,
                f,
                None,
                "may not be more than 128 bytes",
            ));
        }
    }
    let ns = meta_str(obj, "namespace").unwrap_or_default();
    if let Some(rns) = obj.pointer("/regarding/namespace").and_then(|n| n.as_str())
        && !rns.is_empty()
        && rns != ns
    {
        errs.push(FieldErr::invalid(
            "regarding.namespace",
            json!(rns),
            "does not match event.namespace",
        ));
    }
    if let Some(series) = obj.get("series").filter(|s| !s.is_null()) {
        if series.get("count").and_then(|c| c.as_i64()).unwrap_or(0) < 2 {
            errs.push(FieldErr::invalid(
                "series.count",
                series.get("count").cloned().unwrap_or(json!(0)),
                "should be at least 2",
            ));
        }
        if series.get("lastObservedTime").is_none_or(|v| v.is_null()) {
            errs.push(FieldErr::required("series.lastObservedTime", ""));
        }
    }
    errs
}

/// Defaults and validates a CRD; sets its status like the CRD controllers.
fn crd_mutate_validate(obj: &mut Value, create: bool) -> Vec<FieldErr> {
    let mut errs = Vec::new();
    let group = obj
        .pointer("/spec/group")
        .and_then(|g| g.as_str())
        .unwrap_or_default()
        .to_string();
    let plural = obj
        .pointer("/spec/names/plural")
        .and_then(|g| g.as_str())
        .unwrap_or_default()
        .to_string();
    let kind = obj
        .pointer("/spec/names/kind")
        .and_then(|g| g.as_str())
        .unwrap_or_default()
        .to_string();
    if group.is_empty() {
        errs.push(FieldErr::required("spec.group", ""));
    }
    if plural.is_empty() {
        errs.push(FieldErr::required("spec.names.plural", ""));
    }
    if kind.is_empty() {
        errs.push(FieldErr::required("spec.names.kind", ""));
    }
    let name = meta_str(obj, "name").unwrap_or_default().to_string();
    if !group.is_empty() && !plural.is_empty() && name != format!("{plural}.{group}") {
        errs.push(FieldErr::invalid(
            "metadata.name",
            json!(name),
            "must be spec.names.plural+\".\"+spec.group",
        ));
    }
    match obj.pointer("/spec/scope").and_then(|s| s.as_str()) {
        Some("Namespaced") | Some("Cluster") => {}
        other => errs.push(FieldErr::new(
            FieldErrKind::NotSupported,
            "spec.scope",
            Some(json!(other.unwrap_or_default())),
            "supported values: \"Cluster\", \"Namespaced\"",
        )),
    }
    let versions = obj
        .pointer("/spec/versions")
        .and_then(|v| v.as_array())
        .cloned()
        .unwrap_or_default();
    if versions.is_empty() {
        errs.push(FieldErr::invalid(
            "spec.versions",
            json!([]),
            "must have exactly one version marked as storage version",
        ));
    } else {
        let storage: Vec<&Value> = versions
            .iter()
            .filter(|v| v.get("storage").and_then(|s| s.as_bool()) == Some(true))
            .collect();
        if storage.len() != 1 {
            errs.push(FieldErr::invalid(
                "spec.versions",
                Value::Array(versions.clone()),
                "must have exactly one version marked as storage version",
            ));
        }
        for (i, v) in versions.iter().enumerate() {
            if v.pointer("/schema/openAPIV3Schema").is_none() {
                errs.push(FieldErr::required(
                    format!("spec.versions[{i}].schema.openAPIV3Schema"),
                    "schemas are required",
                ));
            }
        }
    }
    if !errs.is_empty() {
        return errs;
    }
    // Defaulting (as the apiextensions registry does).
    if obj
        .pointer("/spec/names/singular")
        .and_then(|s| s.as_str())
        .unwrap_or_default()
        .is_empty()
    {
        obj["spec"]["names"]["singular"] = json!(kind.to_lowercase());
    }
    if obj
        .pointer("/spec/names/listKind")
        .and_then(|s| s.as_str())
        .unwrap_or_default()
        .is_empty()
    {
        obj["spec"]["names"]["listKind"] = json!(format!("{kind}List"));
    }
    if obj.pointer("/spec/conversion").is_none() {
        obj["spec"]["conversion"] = json!({"strategy": "None"});
    }
    if create {
        let m = meta_mut(obj);
        let fins = m.entry("finalizers").or_insert(json!([]));
        if let Some(a) = fins.as_array_mut()
            && !a.iter().any(|f| f == CRD_FINALIZER)
        {
            a.push(json!(CRD_FINALIZER));
        }
    }
    // Status, as set by the naming and establishing controllers.
    let names = obj.pointer("/spec/names").cloned().unwrap_or(json!({}));
    let storage = versions
        .iter()
        .find(|v| v.get("storage").and_then(|s| s.as_bool()) == Some(true))
        .and_then(|v| v.get("name").cloned())
        .unwrap_or(json!("v1"));
    let mut stored: Vec<Value> = obj
        .pointer("/status/storedVersions")
        .and_then(|s| s.as_array())
        .cloned()
        .unwrap_or_default();
    if !stored.contains(&storage) {
        stored.push(storage);
    }
    if !obj.get("status").is_some_and(|s| s.is_object()) {
        obj["status"] = json!({});
    }
    obj["status"]["acceptedNames"] = names;
    obj["status"]["storedVersions"] = Value::Array(stored);
    set_condition(
        obj,
        "NamesAccepted",
        "True",
        "NoConflicts",
        "no conflicts found",
    );
    set_condition(
        obj,
        "Established",
        "True",
        "InitialNamesAccepted",
        "the initial names have been accepted",
    );
    errs
}

/// One line of a watch stream.
pub(crate) fn watch_line(typ: &str, obj: &Value) -> Bytes {
    let mut s = serde_json::to_string(&json!({"type": typ, "object": obj})).unwrap_or_default();
    s.push('\n');
    Bytes::from(s)
}

/// A bookmark object for a resource at a revision.
pub(crate) fn bookmark(
    res: &ResourceDef,
    version: &str,
    meta_only: bool,
    rv: u64,
    initial_end: bool,
) -> Value {
    let (api_version, kind) = if meta_only {
        (
            "meta.k8s.io/v1".to_string(),
            "PartialObjectMetadata".to_string(),
        )
    } else {
        (res.api_version(version), res.kind.clone())
    };
    let mut meta = json!({"resourceVersion": rv.to_string(), "creationTimestamp": null});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    json!({"kind": kind, "apiVersion": api_version, "metadata": meta})
}

/// The resource reference used for errors on unknown resources.
pub(crate) fn res_ref(group: &str, plural: &str) -> ResRef {
    ResRef {
        group: group.to_string(),
        plural: plural.to_string(),
        kind: String::new(),
    }
}
