//! A simplified model of server-side apply and `metadata.managedFields`.
//!
//! Field sets are stored in the real `FieldsV1` trie format (`f:`, `k:`, `v:`
//! keys) inside each object's `managedFields`. Lists follow their schema's
//! `x-kubernetes-list-type` (atomic by default for custom resources,
//! `metadata.finalizers` is a set, `metadata.ownerReferences` a map keyed by
//! `uid`); maps are granular unless `x-kubernetes-map-type: atomic`.

use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::LazyLock;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Pe {
    F(String),
    K(String),
    V(String),
    I(usize),
}

pub(crate) type FieldPath = Vec<Pe>;
pub(crate) type FieldSet = BTreeSet<FieldPath>;

static META_SCHEMA: LazyLock<Value> = LazyLock::new(|| {
    json!({
        "type": "object",
        "properties": {
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
            "finalizers": {"type": "array", "items": {"type": "string"}, "x-kubernetes-list-type": "set"},
            "ownerReferences": {
                "type": "array",
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["uid"],
                "items": {"type": "object", "properties": {}}
            }
        }
    })
});

const IGNORED_META: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
];

fn canonical(v: &Value) -> String {
    // serde_json's Map may or may not preserve order; sort explicitly.
    match v {
        Value::Object(m) => {
            let sorted: BTreeMap<&String, String> =
                m.iter().map(|(k, v)| (k, canonical(v))).collect();
            let parts: Vec<String> = sorted
                .iter()
                .map(|(k, v)| format!("{}:{}", serde_json::to_string(k).unwrap_or_default(), v))
                .collect();
            format!("{{{}}}", parts.join(","))
        }
        Value::Array(a) => format!(
            "[{}]",
            a.iter().map(canonical).collect::<Vec<_>>().join(",")
        ),
        other => other.to_string(),
    }
}

/// Type information for walking an object.
#[derive(Clone, Copy)]
pub(crate) struct Types<'a> {
    pub schema: Option<&'a Value>,
}

fn child_schema<'a>(schema: Option<&'a Value>, key: &str, at_root: bool) -> Option<&'a Value> {
    if at_root && key == "metadata" {
        return Some(&META_SCHEMA);
    }
    let s = schema?;
    s.get("properties")
        .and_then(|p| p.get(key))
        .or_else(|| s.get("additionalProperties").filter(|a| a.is_object()))
}

enum ListKind {
    Atomic,
    Set,
    Map(Vec<String>),
}

fn list_kind(schema: Option<&Value>) -> ListKind {
    match schema
        .and_then(|s| s.get("x-kubernetes-list-type"))
        .and_then(|t| t.as_str())
    {
        Some("set") => ListKind::Set,
        Some("map") => ListKind::Map(
            schema
                .and_then(|s| s.get("x-kubernetes-list-map-keys"))
                .and_then(|k| k.as_array())
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default(),
        ),
        _ => ListKind::Atomic,
    }
}

fn item_key(item: &Value, keys: &[String]) -> String {
    let mut m = Map::new();
    for k in keys {
        if let Some(v) = item.get(k) {
            m.insert(k.clone(), v.clone());
        }
    }
    canonical(&Value::Object(m))
}

fn is_atomic_map(schema: Option<&Value>) -> bool {
    schema
        .and_then(|s| s.get("x-kubernetes-map-type"))
        .and_then(|t| t.as_str())
        == Some("atomic")
}

/// Which part of the object a field set covers.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    /// Everything.
    All,
    /// Everything but `.status` (main resource with a status subresource).
    NoStatus,
    /// Only `.status`.
    StatusOnly,
}

/// Collects the field set of an object.
pub(crate) fn collect(obj: &Value, types: Types, scope: Scope) -> FieldSet {
    let mut out = FieldSet::new();
    if let Value::Object(m) = obj {
        for (k, v) in m {
            if matches!(k.as_str(), "apiVersion" | "kind") {
                continue;
            }
            match scope {
                Scope::NoStatus if k == "status" => continue,
                Scope::StatusOnly if k != "status" => continue,
                _ => {}
            }
            let cs = child_schema(types.schema, k, true);
            if k == "metadata" {
                if let Value::Object(mm) = v {
                    for (mk, mv) in mm {
                        if IGNORED_META.contains(&mk.as_str()) || mk == "generateName" {
                            continue;
                        }
                        let mcs = child_schema(cs, mk, false);
                        walk(
                            mcs,
                            mv,
                            vec![Pe::F("metadata".into()), Pe::F(mk.clone())],
                            &mut out,
                        );
                    }
                }
                continue;
            }
            walk(cs, v, vec![Pe::F(k.clone())], &mut out);
        }
    }
    out
}

fn walk(schema: Option<&Value>, v: &Value, prefix: FieldPath, out: &mut FieldSet) {
    match v {
        Value::Object(m) if !m.is_empty() && !is_atomic_map(schema) => {
            for (k, cv) in m {
                let mut p = prefix.clone();
                p.push(Pe::F(k.clone()));
                walk(child_schema(schema, k, false), cv, p, out);
            }
        }
        Value::Array(items) => match list_kind(schema) {
            ListKind::Atomic => {
                out.insert(prefix);
            }
            ListKind::Set => {
                if items.is_empty() {
                    out.insert(prefix.clone());
                }
                for it in items {
                    let mut p = prefix.clone();
                    p.push(Pe::V(canonical(it)));
                    out.insert(p);
                }
            }
            ListKind::Map(keys) => {
                if items.is_empty() {
                    out.insert(prefix.clone());
                }
                let is = schema.and_then(|s| s.get("items"));
                for it in items {
                    let mut p = prefix.clone();
                    p.push(Pe::K(item_key(it, &keys)));
                    out.insert(p.clone());
                    if let Value::Object(m) = it {
                        for (k, cv) in m {
                            let mut cp = p.clone();
                            cp.push(Pe::F(k.clone()));
                            walk(child_schema(is, k, false), cv, cp, out);
                        }
                    }
                }
            }
        },
        _ => {
            out.insert(prefix);
        }
    }
}

/// The value at a field path.
pub(crate) fn get<'a>(obj: &'a Value, path: &[Pe], types: Types) -> Option<&'a Value> {
    let mut cur = obj;
    let mut schema = types.schema;
    let mut at_root = true;
    for pe in path {
        match pe {
            Pe::F(k) => {
                schema = child_schema(schema, k, at_root);
                cur = cur.get(k)?;
            }
            Pe::V(c) => {
                cur = cur.as_array()?.iter().find(|it| canonical(it) == *c)?;
            }
            Pe::K(c) => {
                let keys = match list_kind(schema) {
                    ListKind::Map(k) => k,
                    _ => return None,
                };
                cur = cur
                    .as_array()?
                    .iter()
                    .find(|it| item_key(it, &keys) == *c)?;
                schema = schema.and_then(|s| s.get("items"));
            }
            Pe::I(i) => cur = cur.get(*i)?,
        }
        at_root = false;
    }
    Some(cur)
}

/// Removes the field at `path` (no-op when absent).
pub(crate) fn remove(obj: &mut Value, path: &[Pe], types: Types) {
    let Some((last, parent_path)) = path.split_last() else {
        return;
    };
    // Resolve the parent's schema to know the list kind.
    let mut schema = types.schema;
    let mut at_root = true;
    for pe in parent_path {
        match pe {
            Pe::F(k) => schema = child_schema(schema, k, at_root),
            Pe::K(_) => schema = schema.and_then(|s| s.get("items")),
            _ => {}
        }
        at_root = false;
    }
    let keys = match list_kind(schema) {
        ListKind::Map(k) => k,
        _ => vec![],
    };
    let Some(parent) = get_mut(obj, parent_path, types) else {
        return;
    };
    match last {
        Pe::F(k) => {
            if let Value::Object(m) = parent {
                m.remove(k);
            }
        }
        Pe::V(c) => {
            if let Value::Array(a) = parent {
                a.retain(|it| canonical(it) != *c);
            }
        }
        Pe::K(c) => {
            if let Value::Array(a) = parent {
                a.retain(|it| item_key(it, &keys) != *c);
            }
        }
        Pe::I(i) => {
            if let Value::Array(a) = parent
                && *i < a.len()
            {
                a.remove(*i);
            }
        }
    }
}

fn get_mut<'a>(obj: &'a mut Value, path: &[Pe], types: Types) -> Option<&'a mut Value> {
    let mut cur = obj;
    let mut schema = types.schema;
    let mut at_root = true;
    for pe in path {
        match pe {
            Pe::F(k) => {
                schema = child_schema(schema, k, at_root);
                cur = cur.get_mut(k)?;
            }
            Pe::V(c) => {
                cur = cur
                    .as_array_mut()?
                    .iter_mut()
                    .find(|it| canonical(it) == *c)?;
            }
            Pe::K(c) => {
                let keys = match list_kind(schema) {
                    ListKind::Map(k) => k,
                    _ => return None,
                };
                cur = cur
                    .as_array_mut()?
                    .iter_mut()
                    .find(|it| item_key(it, &keys) == *c)?;
                schema = schema.and_then(|s| s.get("items"));
            }
            Pe::I(i) => cur = cur.get_mut(*i)?,
        }
        at_root = false;
    }
    Some(cur)
}

/// Merges an applied configuration into the live object.
pub(crate) fn merge_applied(live: &mut Value, applied: &Value, types: Types) {
    merge_value(live, applied, types.schema, true);
}

fn merge_value(live: &mut Value, applied: &Value, schema: Option<&Value>, at_root: bool) {
    match (live, applied) {
        (Value::Object(l), Value::Object(a)) if !is_atomic_map(schema) => {
            for (k, av) in a {
                let cs = child_schema(schema, k, at_root);
                match l.get_mut(k) {
                    Some(lv) if !av.is_null() => merge_value(lv, av, cs, false),
                    _ => {
                        l.insert(k.clone(), av.clone());
                    }
                }
            }
        }
        (Value::Array(l), Value::Array(a)) => match list_kind(schema) {
            ListKind::Atomic => *l = a.clone(),
            ListKind::Set => {
                for it in a {
                    if !l.contains(it) {
                        l.push(it.clone());
                    }
                }
            }
            ListKind::Map(keys) => {
                let is = schema.and_then(|s| s.get("items"));
                for it in a {
                    let k = item_key(it, &keys);
                    match l.iter_mut().find(|x| item_key(x, &keys) == k) {
                        Some(x) => merge_value(x, it, is, false),
                        None => l.push(it.clone()),
                    }
                }
            }
        },
        (l, a) => *l = a.clone(),
    }
}

/// One `managedFields` entry.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub manager: String,
    pub operation: String,
    pub api_version: String,
    pub time: String,
    pub subresource: Option<String>,
    pub set: FieldSet,
}

impl Entry {
    fn same_slot(&self, manager: &str, operation: &str, sub: Option<&str>) -> bool {
        self.manager == manager && self.operation == operation && self.subresource.as_deref() == sub
    }
}

pub(crate) fn read_entries(obj: &Value) -> Vec<Entry> {
    let Some(arr) = obj
        .pointer("/metadata/managedFields")
        .and_then(|m| m.as_array())
    else {
        return vec![];
    };
    arr.iter()
        .filter_map(|e| {
            let mut set = FieldSet::new();
            if let Some(f) = e.get("fieldsV1") {
                parse_trie(f, &mut vec![], &mut set);
            }
            Some(Entry {
                manager: e.get("manager")?.as_str()?.to_string(),
                operation: e
                    .get("operation")
                    .and_then(|o| o.as_str())
                    .unwrap_or("Update")
                    .to_string(),
                api_version: e
                    .get("apiVersion")
                    .and_then(|o| o.as_str())
                    .unwrap_or_default()
                    .to_string(),
                time: e
                    .get("time")
                    .and_then(|o| o.as_str())
                    .unwrap_or_default()
                    .to_string(),
                subresource: e
                    .get("subresource")
                    .and_then(|o| o.as_str())
                    .map(String::from),
                set,
            })
        })
        .collect()
}

pub(crate) fn write_entries(obj: &mut Value, entries: &[Entry]) {
    let arr: Vec<Value> = entries
        .iter()
        .filter(|e| !e.set.is_empty())
        .map(|e| {
            let mut v = json!({
                "manager": e.manager,
                "operation": e.operation,
                "apiVersion": e.api_version,
                "time": e.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": to_trie(&e.set),
            });
            if let Some(s) = &e.subresource {
                v["subresource"] = json!(s);
            }
            v
        })
        .collect();
    if let Some(m) = obj.get_mut("metadata").and_then(|m| m.as_object_mut()) {
        if arr.is_empty() {
            m.remove("managedFields");
        } else {
            m.insert("managedFields".into(), Value::Array(arr));
        }
    }
}

fn pe_key(pe: &Pe) -> String {
    match pe {
        Pe::F(k) => format!("f:{k}"),
        Pe::K(k) => format!("k:{k}"),
        Pe::V(v) => format!("v:{v}"),
        Pe::I(i) => format!("i:{i}"),
    }
}

fn to_trie(set: &FieldSet) -> Value {
    let mut root = Map::new();
    for path in set {
        let mut cur = &mut root;
        for (i, pe) in path.iter().enumerate() {
            let entry = cur.entry(pe_key(pe)).or_insert_with(|| json!({}));
            let Value::Object(next) = entry else { break };
            cur = next;
            if i + 1 == path.len() && matches!(pe, Pe::K(_)) {
                cur.entry(".").or_insert_with(|| json!({}));
            }
        }
    }
    // Item markers without children keep just `{}` like the real server.
    fn tidy(v: &mut Value) {
        if let Value::Object(m) = v {
            if m.len() == 1 && m.contains_key(".") {
                m.clear();
            }
            for c in m.values_mut() {
                tidy(c);
            }
        }
    }
    let mut v = Value::Object(root);
    tidy(&mut v);
    v
}

fn parse_trie(v: &Value, prefix: &mut FieldPath, out: &mut FieldSet) {
    let Value::Object(m) = v else { return };
    if m.is_empty() && !prefix.is_empty() {
        out.insert(prefix.clone());
        return;
    }
    for (k, child) in m {
        if k == "." {
            out.insert(prefix.clone());
            continue;
        }
        let pe = if let Some(r) = k.strip_prefix("f:") {
            Pe::F(r.to_string())
        } else if let Some(r) = k.strip_prefix("k:") {
            Pe::K(
                serde_json::from_str::<Value>(r)
                    .map(|v| canonical(&v))
                    .unwrap_or_else(|_| r.to_string()),
            )
        } else if let Some(r) = k.strip_prefix("v:") {
            Pe::V(
                serde_json::from_str::<Value>(r)
                    .map(|v| canonical(&v))
                    .unwrap_or_else(|_| r.to_string()),
            )
        } else if let Some(r) = k.strip_prefix("i:") {
            Pe::I(r.parse().unwrap_or(0))
        } else {
            continue;
        };
        prefix.push(pe);
        parse_trie(child, prefix, out);
        prefix.pop();
    }
}

fn is_prefix(p: &[Pe], of: &[Pe]) -> bool {
    of.len() >= p.len() && of[..p.len()] == *p
}

/// Records a non-apply write by `manager`: it takes ownership of every field
/// it changed; removed fields disappear from every manager.
#[allow(clippy::too_many_arguments)]
pub(crate) fn record_update(
    new: &mut Value,
    old: Option<&Value>,
    manager: &str,
    subresource: Option<&str>,
    api_version: &str,
    now: &str,
    types: Types,
    scope: Scope,
) {
    let mut entries = old.map(read_entries).unwrap_or_default();
    let old_set = old.map(|o| collect(o, types, scope)).unwrap_or_default();
    let new_set = collect(new, types, scope);
    let changed: FieldSet = new_set
        .iter()
        .filter(|p| old.and_then(|o| get(o, p, types)) != get(new, p, types))
        .cloned()
        .collect();
    let removed: Vec<&FieldPath> = old_set.difference(&new_set).collect();
    for e in entries.iter_mut() {
        let before = e.set.len();
        e.set
            .retain(|p| !changed.contains(p) && !removed.iter().any(|r| is_prefix(r, p)));
        if e.set.len() != before && e.same_slot(manager, "Update", subresource) {
            // time refreshed below
        }
    }
    if !changed.is_empty() {
        match entries
            .iter_mut()
            .find(|e| e.same_slot(manager, "Update", subresource))
        {
            Some(e) => {
                e.set.extend(changed);
                e.time = now.to_string();
                e.api_version = api_version.to_string();
            }
            None => entries.push(Entry {
                manager: manager.to_string(),
                operation: "Update".into(),
                api_version: api_version.to_string(),
                time: now.to_string(),
                subresource: subresource.map(String::from),
                set: changed,
            }),
        }
    }
    write_entries(new, &entries);
}

/// A field owned by another manager with a different value.
pub(crate) struct Conflict {
    pub manager: String,
    pub api_version: String,
    pub path: String,
}

pub(crate) fn path_display(p: &[Pe]) -> String {
    let mut s = String::new();
    for pe in p {
        match pe {
            Pe::F(k) => {
                s.push('.');
                s.push_str(k);
            }
            Pe::K(k) => s.push_str(&format!(
                "[{}]",
                k.trim_start_matches('{')
                    .trim_end_matches('}')
                    .replace(':', "=")
            )),
            Pe::V(v) => s.push_str(&format!("[={v}]")),
            Pe::I(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

/// Server-side apply of `applied` by `manager` onto `live` (None = create).
#[allow(clippy::too_many_arguments)]
pub(crate) fn apply(
    live: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
    subresource: Option<&str>,
    api_version: &str,
    now: &str,
    types: Types,
    scope: Scope,
) -> Result<Value, Vec<Conflict>> {
    let mut entries = live.map(read_entries).unwrap_or_default();
    let applied_set = collect(applied, types, scope);
    let empty = json!({});
    let live_v = live.unwrap_or(&empty);

    // Conflicts: leaf fields owned by someone else whose value would change.
    let mut conflicts = Vec::new();
    for e in entries.iter() {
        if e.manager == manager {
            continue;
        }
        for p in applied_set.iter() {
            if matches!(p.last(), Some(Pe::K(_)) | Some(Pe::V(_))) {
                continue;
            }
            if e.set.contains(p) && get(live_v, p, types) != get(applied, p, types) {
                conflicts.push(Conflict {
                    manager: e.manager.clone(),
                    api_version: e.api_version.clone(),
                    path: path_display(p),
                });
            }
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(conflicts);
    }
    if force {
        for e in entries.iter_mut().filter(|e| e.manager != manager) {
            e.set.retain(|p| {
                matches!(p.last(), Some(Pe::K(_)) | Some(Pe::V(_)))
                    || !applied_set.contains(p)
                    || get(live_v, p, types) == get(applied, p, types)
            });
        }
    }

    let mut merged = live_v.clone();
    // Strip the applied object's own system metadata so it does not clobber.
    let mut applied_clean = applied.clone();
    if let Some(m) = applied_clean
        .get_mut("metadata")
        .and_then(|m| m.as_object_mut())
    {
        for k in IGNORED_META {
            m.remove(*k);
        }
    }
    match scope {
        Scope::NoStatus => {
            if let Some(m) = applied_clean.as_object_mut() {
                m.remove("status");
            }
        }
        Scope::StatusOnly => {
            if let Some(m) = applied_clean.as_object_mut() {
                m.retain(|k, _| k == "status" || k == "apiVersion" || k == "kind");
            }
        }
        Scope::All => {}
    }
    merge_applied(&mut merged, &applied_clean, types);

    // Remove fields this manager applied before but no longer does.
    let prev: FieldSet = entries
        .iter()
        .find(|e| e.same_slot(manager, "Apply", subresource))
        .map(|e| e.set.clone())
        .unwrap_or_default();
    let mut dropped: Vec<&FieldPath> = prev
        .iter()
        .filter(|p| !applied_set.contains(*p))
        .filter(|p| {
            !entries
                .iter()
                .filter(|e| !e.same_slot(manager, "Apply", subresource))
                .any(|e| e.set.iter().any(|q| is_prefix(p, q)))
        })
        .collect();
    dropped.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in dropped {
        remove(&mut merged, p, types);
    }

    match entries
        .iter_mut()
        .find(|e| e.same_slot(manager, "Apply", subresource))
    {
        Some(e) => {
            if e.set != applied_set {
                e.time = now.to_string();
            }
            e.set = applied_set;
            e.api_version = api_version.to_string();
        }
        None => entries.push(Entry {
            manager: manager.to_string(),
            operation: "Apply".into(),
            api_version: api_version.to_string(),
            time: now.to_string(),
            subresource: subresource.map(String::from),
            set: applied_set,
        }),
    }
    write_entries(&mut merged, &entries);
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trie_round_trip_and_sets() {
        let schema = json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
            "tags": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}},
            "users": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["email"],
                      "items": {"type": "object", "properties": {"email": {"type": "string"}, "role": {"type": "string"}}}}
        }}}});
        let types = Types {
            schema: Some(&schema),
        };
        let obj = json!({"apiVersion": "x/v1", "kind": "X", "metadata": {"name": "a", "labels": {"l": "1"}, "finalizers": ["f"]},
            "spec": {"tags": ["a", "b"], "users": [{"email": "e", "role": "r"}]}});
        let set = collect(&obj, types, Scope::All);
        let trie = to_trie(&set);
        let mut back = FieldSet::new();
        parse_trie(&trie, &mut vec![], &mut back);
        assert_eq!(set, back);
        assert!(trie["f:metadata"]["f:finalizers"].get("v:\"f\"").is_some());
        assert!(
            trie["f:spec"]["f:users"]
                .get("k:{\"email\":\"e\"}")
                .is_some()
        );
        let mut o = obj.clone();
        remove(
            &mut o,
            &[
                Pe::F("spec".into()),
                Pe::F("tags".into()),
                Pe::V("\"a\"".into()),
            ],
            types,
        );
        assert_eq!(o["spec"]["tags"], json!(["b"]));
    }
}
