//! Label and field selectors, following `k8s.io/apimachinery/pkg/labels` and
//! `k8s.io/apimachinery/pkg/fields`.

use serde_json::Value;
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq)]
enum Op {
    Exists,
    NotExists,
    Eq(String),
    NotEq(String),
    In(Vec<String>),
    NotIn(Vec<String>),
    Gt(i64),
    Lt(i64),
}

/// A parsed label selector (all requirements must match).
#[derive(Debug, Clone, Default)]
pub(crate) struct LabelSelector {
    reqs: Vec<(String, Op)>,
}

fn is_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/')
}

/// Splits on commas that are not inside parentheses.
fn split_top(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut cur = String::new();
    for c in s.chars() {
        match c {
            '(' => {
                depth += 1;
                cur.push(c)
            }
            ')' => {
                depth -= 1;
                cur.push(c)
            }
            ',' if depth == 0 => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out
}

fn valid_label_value(v: &str) -> bool {
    v.len() <= 63
        && (v.is_empty()
            || (v
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                && v.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
                && v.chars().last().is_some_and(|c| c.is_ascii_alphanumeric())))
}

impl LabelSelector {
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut reqs = Vec::new();
        if s.trim().is_empty() {
            return Ok(Self { reqs });
        }
        for part in split_top(s) {
            let p = part.trim();
            if p.is_empty() {
                return Err(format!("found '', expected: identifier in selector {s:?}"));
            }
            let req =
                Self::parse_req(p).map_err(|e| format!("unable to parse requirement: {e}"))?;
            reqs.push(req);
        }
        Ok(Self { reqs })
    }

    fn parse_req(p: &str) -> Result<(String, Op), String> {
        if let Some(k) = p.strip_prefix('!') {
            let k = k.trim();
            check_key(k)?;
            return Ok((k.to_string(), Op::NotExists));
        }
        let key_end = p.find(|c: char| !is_key_char(c)).unwrap_or(p.len());
        let key = &p[..key_end];
        check_key(key)?;
        let rest = p[key_end..].trim();
        if rest.is_empty() {
            return Ok((key.to_string(), Op::Exists));
        }
        let value = |v: &str| -> Result<String, String> {
            let v = v.trim();
            if !valid_label_value(v) {
                return Err(format!(
                    "values[0][{key}]: Invalid value: {v:?}: a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"
                ));
            }
            Ok(v.to_string())
        };
        let set = |v: &str| -> Result<Vec<String>, String> {
            let v = v.trim();
            let inner = v
                .strip_prefix('(')
                .and_then(|v| v.strip_suffix(')'))
                .ok_or_else(|| format!("found '{v}', expected: '('"))?;
            inner.split(',').map(value).collect()
        };
        if let Some(v) = rest.strip_prefix("!=") {
            Ok((key.into(), Op::NotEq(value(v)?)))
        } else if let Some(v) = rest.strip_prefix("==") {
            Ok((key.into(), Op::Eq(value(v)?)))
        } else if let Some(v) = rest.strip_prefix('=') {
            Ok((key.into(), Op::Eq(value(v)?)))
        } else if let Some(v) = rest.strip_prefix("notin") {
            Ok((key.into(), Op::NotIn(set(v)?)))
        } else if let Some(v) = rest.strip_prefix("in") {
            Ok((key.into(), Op::In(set(v)?)))
        } else if let Some(v) = rest.strip_prefix('>') {
            Ok((
                key.into(),
                Op::Gt(
                    v.trim()
                        .parse()
                        .map_err(|_| format!("invalid integer value {v:?}"))?,
                ),
            ))
        } else if let Some(v) = rest.strip_prefix('<') {
            Ok((
                key.into(),
                Op::Lt(
                    v.trim()
                        .parse()
                        .map_err(|_| format!("invalid integer value {v:?}"))?,
                ),
            ))
        } else {
            Err(format!(
                "found '{rest}', expected: in, notin, =, ==, !=, gt, lt"
            ))
        }
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.reqs.iter().all(|(k, op)| {
            let v = labels.get(k);
            match op {
                Op::Exists => v.is_some(),
                Op::NotExists => v.is_none(),
                Op::Eq(x) => v == Some(x),
                Op::NotEq(x) => v != Some(x),
                Op::In(xs) => v.is_some_and(|v| xs.contains(v)),
                Op::NotIn(xs) => v.is_none_or(|v| !xs.contains(v)),
                Op::Gt(n) => v
                    .and_then(|v| v.parse::<i64>().ok())
                    .is_some_and(|v| v > *n),
                Op::Lt(n) => v
                    .and_then(|v| v.parse::<i64>().ok())
                    .is_some_and(|v| v < *n),
            }
        })
    }

    pub fn matches_obj(&self, obj: &Value) -> bool {
        if self.reqs.is_empty() {
            return true;
        }
        let labels: BTreeMap<String, String> = obj
            .pointer("/metadata/labels")
            .and_then(|l| l.as_object())
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect()
            })
            .unwrap_or_default();
        self.matches(&labels)
    }

    pub fn is_empty(&self) -> bool {
        self.reqs.is_empty()
    }
}

fn check_key(k: &str) -> Result<(), String> {
    if crate::validation::label_key_error(k).is_some() || k.is_empty() {
        return Err(format!("key: Invalid value: {k:?}: invalid label key"));
    }
    Ok(())
}

/// A parsed field selector.
#[derive(Debug, Clone, Default)]
pub(crate) struct FieldSelector {
    reqs: Vec<(String, bool, String)>, // (field, equal?, value)
}

fn unescape(v: &str) -> String {
    let mut out = String::new();
    let mut it = v.chars();
    while let Some(c) = it.next() {
        if c == '\\' {
            if let Some(n) = it.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Splits on unescaped commas.
fn split_unescaped(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut esc = false;
    for c in s.chars() {
        if esc {
            cur.push('\\');
            cur.push(c);
            esc = false;
        } else if c == '\\' {
            esc = true;
        } else if c == ',' {
            out.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    out.push(cur);
    out
}

impl FieldSelector {
    /// Parses and checks the selector against the fields supported for the resource.
    pub fn parse(s: &str, supported: &[String]) -> Result<Self, String> {
        let mut reqs = Vec::new();
        if s.trim().is_empty() {
            return Ok(Self { reqs });
        }
        for part in split_unescaped(s) {
            let p = part.trim();
            let (field, eq, value) = if let Some((f, v)) = p.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = p.split_once("==") {
                (f, true, v)
            } else if let Some((f, v)) = p.split_once('=') {
                (f, true, v)
            } else {
                return Err(format!("invalid selector: '{s}'; can't understand '{p}'"));
            };
            let field = field.trim();
            if !supported.iter().any(|f| f == field) {
                return Err(format!("field label not supported: {field}"));
            }
            reqs.push((field.to_string(), eq, unescape(value)));
        }
        Ok(Self { reqs })
    }

    pub fn matches_obj(&self, obj: &Value) -> bool {
        self.reqs.iter().all(|(field, eq, value)| {
            let ptr = format!("/{}", field.replace('.', "/"));
            let actual = match obj.pointer(&ptr) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Null) | None => String::new(),
                Some(v) => v.to_string(),
            };
            (actual == *value) == *eq
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn label_selector_grammar() {
        let obj = json!({"metadata": {"labels": {"app": "web", "tier": "fe", "n": "5"}}});
        let ok = |s: &str| LabelSelector::parse(s).unwrap().matches_obj(&obj);
        assert!(ok(""));
        assert!(ok("app=web"));
        assert!(ok("app==web,tier"));
        assert!(ok("app in (web, api)"));
        assert!(ok("app notin (api),!missing"));
        assert!(ok("n>4,n<6"));
        assert!(!ok("app!=web"));
        assert!(!ok("missing"));
        assert!(LabelSelector::parse("app in (a").is_err());
        assert!(LabelSelector::parse("app=a@b").is_err());
        assert!(LabelSelector::parse(",").is_err());
    }

    #[test]
    fn field_selector_grammar() {
        let obj = json!({"metadata": {"name": "a,b", "namespace": "ns"}});
        let sup = vec![
            "metadata.name".to_string(),
            "metadata.namespace".to_string(),
        ];
        let fs =
            FieldSelector::parse(r"metadata.name=a\,b,metadata.namespace!=other", &sup).unwrap();
        assert!(fs.matches_obj(&obj));
        assert!(FieldSelector::parse("spec.x=1", &sup).is_err());
    }
}
