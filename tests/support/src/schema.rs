//! Structural-schema admission for custom resources: pruning, defaulting,
//! OpenAPI value validation, list-type uniqueness and CEL
//! (`x-kubernetes-validations`, evaluated with kube's client-side CEL).

use crate::errors::{FieldErr, FieldErrKind};
use regex::Regex;
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

/// Per-field path segment used to locate values for validation ratcheting.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Seg {
    Key(String),
    Idx(usize),
}

pub(crate) fn path_str(path: &[Seg]) -> String {
    let mut s = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
            Seg::Idx(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

/// Parses "spec.users[0].x" back into segments.
pub(crate) fn parse_path(p: &str) -> Vec<Seg> {
    let mut out = Vec::new();
    for part in p.trim_start_matches('.').split('.') {
        if part.is_empty() {
            continue;
        }
        let mut rest = part;
        if let Some(i) = rest.find('[') {
            let key = &rest[..i];
            if !key.is_empty() {
                out.push(Seg::Key(key.to_string()));
            }
            rest = &rest[i..];
            while let Some(end) = rest.find(']') {
                let inner = &rest[1..end];
                match inner.parse::<usize>() {
                    Ok(n) => out.push(Seg::Idx(n)),
                    Err(_) => out.push(Seg::Key(
                        inner.trim_matches('\'').trim_matches('"').to_string(),
                    )),
                }
                rest = &rest[end + 1..];
                if !rest.starts_with('[') {
                    break;
                }
            }
        } else {
            out.push(Seg::Key(rest.to_string()));
        }
    }
    out
}

pub(crate) fn value_at<'a>(v: &'a Value, path: &[Seg]) -> Option<&'a Value> {
    let mut cur = v;
    for s in path {
        cur = match s {
            Seg::Key(k) => cur.get(k)?,
            Seg::Idx(i) => cur.get(*i)?,
        };
    }
    Some(cur)
}

fn bool_kw(schema: &Value, kw: &str) -> bool {
    schema.get(kw).and_then(|v| v.as_bool()) == Some(true)
}

/// Removes fields the schema does not know about (and non-nullable nulls).
/// Returns the paths of pruned fields (for `fieldValidation=Strict`).
pub(crate) fn prune(
    schema: &Value,
    value: &mut Value,
    path: &mut Vec<Seg>,
    root: bool,
    pruned: &mut Vec<String>,
) {
    match value {
        Value::Object(map) => {
            let preserve = bool_kw(schema, "x-kubernetes-preserve-unknown-fields");
            let embedded = bool_kw(schema, "x-kubernetes-embedded-resource");
            let props = schema.get("properties").and_then(|p| p.as_object());
            let addl = schema.get("additionalProperties").filter(|a| a.is_object());
            let keys: Vec<String> = map.keys().cloned().collect();
            for k in keys {
                if (root || embedded) && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                    // ObjectMeta is handled by the generic metadata code.
                    continue;
                }
                let child_schema = props.and_then(|p| p.get(&k)).or(addl);
                match child_schema {
                    Some(cs) => {
                        let is_null = map.get(&k).is_some_and(|v| v.is_null());
                        if is_null && !bool_kw(cs, "nullable") {
                            map.remove(&k);
                            continue;
                        }
                        path.push(Seg::Key(k.clone()));
                        if let Some(child) = map.get_mut(&k) {
                            prune(cs, child, path, false, pruned);
                        }
                        path.pop();
                    }
                    None => {
                        if !preserve {
                            path.push(Seg::Key(k.clone()));
                            pruned.push(path_str(path));
                            path.pop();
                            map.remove(&k);
                        }
                    }
                }
            }
        }
        Value::Array(items) => {
            if let Some(is) = schema.get("items") {
                for (i, item) in items.iter_mut().enumerate() {
                    path.push(Seg::Idx(i));
                    prune(is, item, path, false, pruned);
                    path.pop();
                }
            }
        }
        _ => {}
    }
}

/// Applies `default` values (after pruning), recursively.
pub(crate) fn apply_defaults(schema: &Value, value: &mut Value) {
    match value {
        Value::Object(map) => {
            if let Some(props) = schema.get("properties").and_then(|p| p.as_object()) {
                for (k, ps) in props {
                    if !map.contains_key(k)
                        && let Some(d) = ps.get("default")
                    {
                        map.insert(k.clone(), d.clone());
                    }
                    if let Some(child) = map.get_mut(k) {
                        apply_defaults(ps, child);
                    }
                }
            }
            if let Some(addl) = schema.get("additionalProperties").filter(|a| a.is_object()) {
                let known: Vec<String> = schema
                    .get("properties")
                    .and_then(|p| p.as_object())
                    .map(|p| p.keys().cloned().collect())
                    .unwrap_or_default();
                for (k, v) in map.iter_mut() {
                    if !known.contains(k) {
                        apply_defaults(addl, v);
                    }
                }
            }
        }
        Value::Array(items) => {
            if let Some(is) = schema.get("items") {
                for item in items {
                    apply_defaults(is, item);
                }
            }
        }
        _ => {}
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) => {
            if n.is_i64() || n.is_u64() {
                "integer"
            } else {
                "number"
            }
        }
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn is_integer(v: &Value) -> bool {
    match v {
        Value::Number(n) => {
            n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0)
        }
        _ => false,
    }
}

static REGEX_CACHE: LazyLock<Mutex<HashMap<String, Option<Regex>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

fn regex_matches(pattern: &str, s: &str) -> bool {
    let mut cache = REGEX_CACHE.lock().unwrap_or_else(|e| e.into_inner());
    let re = cache
        .entry(pattern.to_string())
        .or_insert_with(|| Regex::new(pattern).ok());
    re.as_ref().is_none_or(|re| re.is_match(s))
}

static RE_EMAIL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^[^@\s<>()\[\],;:]+@[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$").unwrap()
});
static RE_UUID: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(?i)[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$").unwrap()
});
static RE_HOSTNAME: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$").unwrap()
});
static RE_DATE: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^\d{4}-\d{2}-\d{2}$").unwrap());

/// Checks the formats the apiserver validates (others are accepted).
fn format_ok(format: &str, s: &str) -> bool {
    match format {
        "email" => RE_EMAIL.is_match(s),
        "uuid" => RE_UUID.is_match(s),
        "date-time" | "datetime" => s.parse::<jiff::Timestamp>().is_ok(),
        "date" => RE_DATE.is_match(s) && s.parse::<jiff::civil::Date>().is_ok(),
        "hostname" => s.len() <= 255 && RE_HOSTNAME.is_match(s),
        "ipv4" => s.parse::<std::net::Ipv4Addr>().is_ok(),
        "ipv6" => s.parse::<std::net::Ipv6Addr>().is_ok(),
        "byte" => {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.decode(s).is_ok()
        }
        "uri" => s.contains(':'),
        _ => true,
    }
}

fn num(v: &Value) -> Option<f64> {
    v.as_f64()
}

fn fmt_num(v: &Value) -> String {
    v.to_string()
}

/// Validates `value` against `schema` (OpenAPI v3 subset used by structural schemas).
pub(crate) fn validate(
    schema: &Value,
    value: &Value,
    path: &mut Vec<Seg>,
    errs: &mut Vec<(Vec<Seg>, FieldErr)>,
) {
    let p = path_str(path);
    let mut push = |path: &Vec<Seg>, e: FieldErr| errs.push((path.clone(), e));
    if value.is_null() {
        if bool_kw(schema, "nullable") {
            return;
        }
        if let Some(t) = schema.get("type").and_then(|t| t.as_str()) {
            push(
                path,
                FieldErr::invalid(
                    &p,
                    json!("null"),
                    format!("{p} in body must be of type {t}: \"null\""),
                ),
            );
        }
        return;
    }
    let int_or_string = bool_kw(schema, "x-kubernetes-int-or-string");
    if int_or_string {
        if !(is_integer(value) || value.is_string()) {
            push(
                path,
                FieldErr::invalid(
                    &p,
                    json!(type_name(value)),
                    format!(
                        "{p} in body must be of type integer-or-string: \"{}\"",
                        type_name(value)
                    ),
                ),
            );
            return;
        }
    } else if let Some(t) = schema.get("type").and_then(|t| t.as_str()) {
        let ok = match t {
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string(),
            "integer" => is_integer(value),
            "number" => value.is_number(),
            "boolean" => value.is_boolean(),
            _ => true,
        };
        if !ok {
            push(
                path,
                FieldErr::invalid(
                    &p,
                    json!(type_name(value)),
                    format!("{p} in body must be of type {t}: \"{}\"", type_name(value)),
                ),
            );
            return;
        }
    }
    if let Some(en) = schema.get("enum").and_then(|e| e.as_array())
        && !en.contains(value)
    {
        let supported: Vec<String> = en.iter().map(crate::errors::render_value).collect();
        push(
            path,
            FieldErr::new(
                FieldErrKind::NotSupported,
                &p,
                Some(value.clone()),
                format!("supported values: {}", supported.join(", ")),
            ),
        );
    }
    match value {
        Value::String(s) => {
            let len = s.chars().count() as u64;
            if let Some(min) = schema.get("minLength").and_then(|m| m.as_u64())
                && len < min
            {
                push(
                    path,
                    FieldErr::invalid(
                        &p,
                        value.clone(),
                        format!("{p} in body should be at least {min} chars long"),
                    ),
                );
            }
            if let Some(max) = schema.get("maxLength").and_then(|m| m.as_u64())
                && len > max
            {
                push(
                    path,
                    FieldErr::new(
                        FieldErrKind::TooLong,
                        &p,
                        Some(value.clone()),
                        format!("may not be more than {max} bytes"),
                    ),
                );
            }
            if let Some(pat) = schema.get("pattern").and_then(|m| m.as_str())
                && !regex_matches(pat, s)
            {
                push(
                    path,
                    FieldErr::invalid(
                        &p,
                        value.clone(),
                        format!("{p} in body should match '{pat}'"),
                    ),
                );
            }
            if let Some(f) = schema.get("format").and_then(|m| m.as_str())
                && !format_ok(f, s)
            {
                push(
                    path,
                    FieldErr::invalid(
                        &p,
                        value.clone(),
                        format!(
                            "{p} in body must be of type {f}: {}",
                            crate::errors::render_value(value)
                        ),
                    ),
                );
            }
        }
        Value::Number(_) => {
            let v = num(value).unwrap_or_default();
            if let Some(min) = schema.get("minimum") {
                let excl = bool_kw(schema, "exclusiveMinimum");
                let m = num(min).unwrap_or_default();
                if (excl && v <= m) || (!excl && v < m) {
                    let rel = if excl {
                        "greater than"
                    } else {
                        "greater than or equal to"
                    };
                    push(
                        path,
                        FieldErr::invalid(
                            &p,
                            value.clone(),
                            format!("{p} in body should be {rel} {}", fmt_num(min)),
                        ),
                    );
                }
            }
            if let Some(max) = schema.get("maximum") {
                let excl = bool_kw(schema, "exclusiveMaximum");
                let m = num(max).unwrap_or_default();
                if (excl && v >= m) || (!excl && v > m) {
                    let rel = if excl {
                        "less than"
                    } else {
                        "less than or equal to"
                    };
                    push(
                        path,
                        FieldErr::invalid(
                            &p,
                            value.clone(),
                            format!("{p} in body should be {rel} {}", fmt_num(max)),
                        ),
                    );
                }
            }
            if let Some(mo) = schema.get("multipleOf").and_then(num)
                && mo != 0.0
                && (v / mo).fract() != 0.0
            {
                push(
                    path,
                    FieldErr::invalid(
                        &p,
                        value.clone(),
                        format!("{p} in body should be a multiple of {mo}"),
                    ),
                );
            }
        }
        Value::Array(items) => {
            let n = items.len() as u64;
            if let Some(min) = schema.get("minItems").and_then(|m| m.as_u64())
                && n < min
            {
                push(
                    path,
                    FieldErr::invalid(
                        &p,
                        json!(n),
                        format!("{p} in body should have at least {min} items"),
                    ),
                );
            }
            if let Some(max) = schema.get("maxItems").and_then(|m| m.as_u64())
                && n > max
            {
                push(
                    path,
                    FieldErr::new(
                        FieldErrKind::TooMany,
                        &p,
                        Some(json!(n)),
                        format!("must have at most {max} items"),
                    ),
                );
            }
            match schema
                .get("x-kubernetes-list-type")
                .and_then(|t| t.as_str())
            {
                Some("set") => {
                    for (i, it) in items.iter().enumerate() {
                        if items[..i].contains(it) {
                            let mut ip = path.clone();
                            ip.push(Seg::Idx(i));
                            push(
                                &ip,
                                FieldErr::new(
                                    FieldErrKind::Duplicate,
                                    path_str(&ip),
                                    Some(it.clone()),
                                    "",
                                ),
                            );
                        }
                    }
                }
                Some("map") => {
                    let keys: Vec<String> = schema
                        .get("x-kubernetes-list-map-keys")
                        .and_then(|k| k.as_array())
                        .map(|a| {
                            a.iter()
                                .filter_map(|s| s.as_str().map(String::from))
                                .collect()
                        })
                        .unwrap_or_default();
                    let key_of = |it: &Value| -> Value {
                        let mut m = Map::new();
                        for k in &keys {
                            if let Some(v) = it.get(k) {
                                m.insert(k.clone(), v.clone());
                            }
                        }
                        Value::Object(m)
                    };
                    let ks: Vec<Value> = items.iter().map(key_of).collect();
                    for i in 0..ks.len() {
                        if ks[..i].contains(&ks[i]) {
                            let mut ip = path.clone();
                            ip.push(Seg::Idx(i));
                            push(
                                &ip,
                                FieldErr::new(
                                    FieldErrKind::Duplicate,
                                    path_str(&ip),
                                    Some(ks[i].clone()),
                                    "",
                                ),
                            );
                        }
                    }
                }
                _ => {}
            }
            if let Some(is) = schema.get("items") {
                for (i, it) in items.iter().enumerate() {
                    path.push(Seg::Idx(i));
                    validate(is, it, path, errs);
                    path.pop();
                }
            }
        }
        Value::Object(map) => {
            if let Some(req) = schema.get("required").and_then(|r| r.as_array()) {
                for r in req.iter().filter_map(|r| r.as_str()) {
                    if !map.contains_key(r) {
                        let mut rp = path.clone();
                        rp.push(Seg::Key(r.to_string()));
                        errs.push((rp.clone(), FieldErr::required(path_str(&rp), "")));
                    }
                }
            }
            let n = map.len() as u64;
            if let Some(min) = schema.get("minProperties").and_then(|m| m.as_u64())
                && n < min
            {
                errs.push((
                    path.clone(),
                    FieldErr::invalid(
                        &p,
                        json!(n),
                        format!("{p} in body should have at least {min} properties"),
                    ),
                ));
            }
            if let Some(max) = schema.get("maxProperties").and_then(|m| m.as_u64())
                && n > max
            {
                errs.push((
                    path.clone(),
                    FieldErr::new(
                        FieldErrKind::TooMany,
                        &p,
                        Some(json!(n)),
                        format!("must have at most {max} items"),
                    ),
                ));
            }
            let props = schema.get("properties").and_then(|p| p.as_object());
            let addl = schema.get("additionalProperties").filter(|a| a.is_object());
            for (k, v) in map {
                if path.is_empty() && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                    continue;
                }
                if let Some(cs) = props.and_then(|p| p.get(k)).or(addl) {
                    path.push(Seg::Key(k.clone()));
                    validate(cs, v, path, errs);
                    path.pop();
                }
            }
        }
        _ => {}
    }
    // Logical junctors (value validation only).
    let here = path.clone();
    let branch_ok = |b: &Value| {
        let mut scratch = Vec::new();
        let mut bp = here.clone();
        validate(b, value, &mut bp, &mut scratch);
        scratch.is_empty()
    };
    if let Some(all) = schema.get("allOf").and_then(|a| a.as_array()) {
        for b in all {
            let mut bp = here.clone();
            validate(b, value, &mut bp, errs);
        }
    }
    if let Some(any) = schema.get("anyOf").and_then(|a| a.as_array())
        && !any.is_empty()
        && !any.iter().any(branch_ok)
    {
        errs.push((
            path.clone(),
            FieldErr::invalid(
                &p,
                json!(type_name(value)),
                format!("{p} in body must be of type {}", type_name(value)),
            ),
        ));
    }
    if let Some(one) = schema.get("oneOf").and_then(|a| a.as_array())
        && !one.is_empty()
    {
        let matched = one.iter().filter(|b| branch_ok(b)).count();
        if matched != 1 {
            errs.push((
                path.clone(),
                FieldErr::invalid(
                    &p,
                    json!(type_name(value)),
                    format!("{p} in body should match exactly one schema in oneOf"),
                ),
            ));
        }
    }
    if let Some(not) = schema.get("not")
        && branch_ok(not)
    {
        errs.push((
            path.clone(),
            FieldErr::invalid(
                &p,
                json!(type_name(value)),
                format!("{p} in body should not match schema in not"),
            ),
        ));
    }
}

/// Runs the CEL rules of the schema; maps failures to field errors.
pub(crate) fn validate_cel(
    schema: &Value,
    obj: &Value,
    old: Option<&Value>,
) -> Vec<(Vec<Seg>, FieldErr, bool)> {
    if !schema.to_string().contains("x-kubernetes-validations") {
        return vec![];
    }
    let validator = kube::core::cel::Validator::new();
    match validator.validate(schema, obj, old) {
        Ok(()) => vec![],
        Err(errs) => errs
            .into_iter()
            .map(|e| {
                let segs = parse_path(&e.field_path);
                let field = path_str(&segs);
                let transition = e.rule.contains("oldSelf");
                let kind = match e.reason.as_deref() {
                    Some("FieldValueForbidden") => FieldErrKind::Forbidden,
                    Some("FieldValueRequired") => FieldErrKind::Required,
                    Some("FieldValueDuplicate") => FieldErrKind::Duplicate,
                    _ => FieldErrKind::Invalid,
                };
                let bad = value_at(obj, &segs)
                    .map(|v| json!(type_name(v)))
                    .unwrap_or(json!("object"));
                let fe = match kind {
                    FieldErrKind::Duplicate => {
                        FieldErr::new(kind, field, Some(bad), e.message.clone())
                    }
                    FieldErrKind::Invalid => FieldErr::invalid(field, bad, e.message.clone()),
                    _ => FieldErr::new(kind, field, None, e.message.clone()),
                };
                (segs, fe, transition)
            })
            .collect(),
    }
}

/// Full admission of a custom resource (prune, default, validate, CEL).
///
/// `old` enables transition rules and ratcheting (unchanged invalid values
/// are tolerated on update, as with the CRDValidationRatcheting feature).
/// `only_status` validates only `.status`, `skip_status` ignores it.
pub(crate) fn admit(
    schema: &Value,
    obj: &mut Value,
    old: Option<&Value>,
    strict: bool,
) -> Result<(), (Vec<FieldErr>, bool)> {
    let mut pruned = Vec::new();
    prune(schema, obj, &mut Vec::new(), true, &mut pruned);
    if strict && !pruned.is_empty() {
        return Err((
            pruned
                .iter()
                .map(|p| {
                    FieldErr::new(
                        FieldErrKind::Invalid,
                        p.clone(),
                        None,
                        "field not declared in schema",
                    )
                })
                .collect(),
            true,
        ));
    }
    apply_defaults(schema, obj);
    let mut errs = Vec::new();
    validate(schema, obj, &mut Vec::new(), &mut errs);
    let mut out: Vec<FieldErr> = Vec::new();
    for (segs, e) in errs {
        if let Some(old) = old
            && ratchets(obj, old, &segs)
        {
            continue;
        }
        out.push(e);
    }
    for (segs, e, transition) in validate_cel(schema, obj, old) {
        if !transition
            && let Some(old) = old
            && ratchets(obj, old, &segs)
        {
            continue;
        }
        out.push(e);
    }
    if out.is_empty() {
        Ok(())
    } else {
        Err((out, false))
    }
}

fn ratchets(new: &Value, old: &Value, segs: &[Seg]) -> bool {
    match (value_at(new, segs), value_at(old, segs)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {
                        "name": {"type": "string", "minLength": 1, "maxLength": 5, "pattern": "^[a-z]+$"},
                        "size": {"type": "string", "default": "m", "enum": ["s", "m", "l"]},
                        "count": {"type": "integer", "minimum": 0, "maximum": 3},
                        "opt": {"type": "string", "nullable": true},
                        "when": {"type": "string", "format": "date-time"},
                        "id": {"type": "string", "format": "uuid"},
                        "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                        "items": {"type": "array", "maxItems": 2, "items": {"type": "string"}}
                    }
                }
            }
        })
    }

    fn errors(obj: Value, old: Option<&Value>) -> Vec<String> {
        let mut o = obj;
        match admit(&schema(), &mut o, old, false) {
            Ok(()) => vec![],
            Err((e, _)) => e.iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn prune_default_validate() {
        let mut o = json!({"metadata": {"name": "x"}, "spec": {"name": "ab", "junk": 1, "free": {"a": 1}, "opt": null, "count": null}});
        admit(&schema(), &mut o, None, false).unwrap();
        assert_eq!(o["spec"]["size"], "m");
        assert!(o["spec"].get("junk").is_none());
        assert!(
            o["spec"].get("count").is_none(),
            "non-nullable null is pruned"
        );
        assert!(o["spec"]["opt"].is_null());
        assert_eq!(o["spec"]["free"]["a"], 1);
        assert_eq!(o["metadata"]["name"], "x");

        assert_eq!(
            errors(json!({"spec": {}}), None),
            ["spec.name: Required value"]
        );
        let e = errors(
            json!({"spec": {"name": "ABCDEFG", "size": "xl", "count": 7, "items": ["a", "b", "c"], "when": "yesterday", "id": "nope"}}),
            None,
        );
        assert!(
            e.contains(&"spec.name: Too long: may not be more than 5 bytes".to_string()),
            "{e:?}"
        );
        assert!(
            e.contains(
                &"spec.name: Invalid value: \"ABCDEFG\": spec.name in body should match '^[a-z]+$'"
                    .to_string()
            )
        );
        assert!(
            e.contains(
                &"spec.size: Unsupported value: \"xl\": supported values: \"s\", \"m\", \"l\""
                    .to_string()
            )
        );
        assert!(e.contains(&"spec.count: Invalid value: 7: spec.count in body should be less than or equal to 3".to_string()));
        assert!(e.contains(&"spec.items: Too many: 3: must have at most 2 items".to_string()));
        assert!(e.contains(&"spec.when: Invalid value: \"yesterday\": spec.when in body must be of type date-time: \"yesterday\"".to_string()));
        assert!(e.iter().any(|e| e.starts_with("spec.id: Invalid value")));
        let mut strict = json!({"spec": {"name": "a", "junk": 1}});
        assert!(matches!(
            admit(&schema(), &mut strict, None, true),
            Err((_, true))
        ));
    }

    #[test]
    fn ratcheting_tolerates_unchanged_invalid_values() {
        let old = json!({"spec": {"name": "TOOLONGNAME"}});
        assert!(
            errors(
                json!({"spec": {"name": "TOOLONGNAME", "count": 1}}),
                Some(&old)
            )
            .is_empty()
        );
        assert!(!errors(json!({"spec": {"name": "TOOLONGNAMF"}}), Some(&old)).is_empty());
    }

    #[test]
    fn paths_round_trip() {
        let p = parse_path("spec.users[1].email");
        assert_eq!(path_str(&p), "spec.users[1].email");
    }
}
