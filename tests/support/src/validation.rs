//! Generic `ObjectMeta` validation (names, labels, annotations, finalizers),
//! following `k8s.io/apimachinery/pkg/api/validation`.

use crate::errors::FieldErr;
use regex::Regex;
use serde_json::{Value, json};
use std::sync::LazyLock;

const DNS1123_LABEL: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";
const DNS1123_SUBDOMAIN: &str = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";
const QUALIFIED_NAME: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const LABEL_VALUE: &str = "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?";

static RE_LABEL: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(&format!("^{DNS1123_LABEL}$")).unwrap());
static RE_SUBDOMAIN: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(&format!("^{DNS1123_SUBDOMAIN}$")).unwrap());
static RE_QNAME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(&format!("^{QUALIFIED_NAME}$")).unwrap());
static RE_LABEL_VALUE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(&format!("^{LABEL_VALUE}$")).unwrap());

pub(crate) fn dns1123_subdomain_error(name: &str) -> Option<String> {
    if name.len() > 253 {
        return Some("must be no more than 253 characters".into());
    }
    if !RE_SUBDOMAIN.is_match(name) {
        return Some(format!(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '{DNS1123_SUBDOMAIN}')"
        ));
    }
    None
}

pub(crate) fn dns1123_label_error(name: &str) -> Option<String> {
    if name.len() > 63 {
        return Some("must be no more than 63 characters".into());
    }
    if !RE_LABEL.is_match(name) {
        return Some(format!(
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '{DNS1123_LABEL}')"
        ));
    }
    None
}

/// `IsQualifiedName`: `[prefix/]name`.
pub(crate) fn label_key_error(key: &str) -> Option<String> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        if p.is_empty() {
            return Some("prefix part must be non-empty".into());
        }
        if let Some(e) = dns1123_subdomain_error(p) {
            return Some(format!("prefix part {e}"));
        }
    }
    if name.is_empty() {
        return Some("name part must be non-empty".into());
    }
    if name.len() > 63 {
        return Some("name part must be no more than 63 characters".into());
    }
    if !RE_QNAME.is_match(name) || name.contains('/') {
        return Some(format!(
            "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '{QUALIFIED_NAME}')"
        ));
    }
    None
}

pub(crate) fn label_value_error(v: &str) -> Option<String> {
    if v.len() > 63 {
        return Some("must be no more than 63 characters".into());
    }
    if !RE_LABEL_VALUE.is_match(v) {
        return Some(format!(
            "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '{LABEL_VALUE}')"
        ));
    }
    None
}

/// Validates the generic parts of `metadata` of an object about to be stored.
pub(crate) fn validate_meta(obj: &Value, namespace_name_rules: bool) -> Vec<FieldErr> {
    let mut errs = Vec::new();
    let meta = match obj.get("metadata") {
        Some(Value::Object(m)) => m,
        _ => {
            errs.push(FieldErr::required("metadata", ""));
            return errs;
        }
    };
    let name = meta
        .get("name")
        .and_then(|n| n.as_str())
        .unwrap_or_default();
    if name.is_empty() {
        errs.push(FieldErr::required(
            "metadata.name",
            "name or generateName is required",
        ));
    } else {
        let e = if namespace_name_rules {
            dns1123_label_error(name)
        } else {
            dns1123_subdomain_error(name)
        };
        if let Some(e) = e {
            errs.push(FieldErr::invalid("metadata.name", json!(name), e));
        }
    }
    if let Some(labels) = meta.get("labels") {
        match labels.as_object() {
            Some(labels) => {
                for (k, v) in labels {
                    if let Some(e) = label_key_error(k) {
                        errs.push(FieldErr::invalid("metadata.labels", json!(k), e));
                    }
                    match v.as_str() {
                        Some(s) => {
                            if let Some(e) = label_value_error(s) {
                                errs.push(FieldErr::invalid("metadata.labels", json!(s), e));
                            }
                        }
                        None => errs.push(FieldErr::invalid(
                            "metadata.labels",
                            v.clone(),
                            "must be a string",
                        )),
                    }
                }
            }
            None if labels.is_null() => {}
            None => errs.push(FieldErr::invalid(
                "metadata.labels",
                labels.clone(),
                "must be a map",
            )),
        }
    }
    if let Some(ann) = meta.get("annotations").and_then(|a| a.as_object()) {
        let mut total = 0usize;
        for (k, v) in ann {
            if let Some(e) = label_key_error(&k.to_lowercase()) {
                errs.push(FieldErr::invalid("metadata.annotations", json!(k), e));
            }
            total += k.len() + v.as_str().map(|s| s.len()).unwrap_or(0);
        }
        if total > 256 * 1024 {
            errs.push(FieldErr::new(
                crate::errors::FieldErrKind::TooLong,
                "metadata.annotations",
                None,
                "may not be more than 262144 bytes",
            ));
        }
    }
    if let Some(fins) = meta.get("finalizers").and_then(|f| f.as_array()) {
        for (i, f) in fins.iter().enumerate() {
            let s = f.as_str().unwrap_or_default();
            if let Some(e) = label_key_error(s) {
                errs.push(FieldErr::invalid(
                    format!("metadata.finalizers[{i}]"),
                    json!(s),
                    e,
                ));
            }
        }
    }
    if let Some(refs) = meta.get("ownerReferences").and_then(|f| f.as_array()) {
        for (i, r) in refs.iter().enumerate() {
            for f in ["apiVersion", "kind", "name", "uid"] {
                if r.get(f)
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .is_empty()
                {
                    errs.push(FieldErr::invalid(
                        format!("metadata.ownerReferences[{i}].{f}"),
                        json!(""),
                        format!("{f} must not be empty"),
                    ));
                }
            }
        }
        let controllers = refs
            .iter()
            .filter(|r| r.get("controller").and_then(|c| c.as_bool()) == Some(true))
            .count();
        if controllers > 1 {
            errs.push(FieldErr::invalid(
                "metadata.ownerReferences",
                Value::Array(refs.clone()),
                "Only one reference can have Controller set to true",
            ));
        }
    }
    errs
}

/// A random suffix as used for `generateName` (5 chars from the apiserver's alphabet).
pub(crate) fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let bytes = uuid::Uuid::new_v4().into_bytes();
    bytes[..5]
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}
