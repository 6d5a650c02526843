//! Label selectors, as in `k8s.io/apimachinery/pkg/labels`: `=`, `==`, `!=`, `in`, `notin`,
//! `key`, `!key`.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
enum Op {
    Exists(bool),
    In(bool, Vec<String>),
}

/// The label requirements of a list or watch; all must match.
#[derive(Debug, Clone, Default)]
pub(crate) struct Selector {
    labels: Vec<(String, Op)>,
}

/// Splits on commas outside parentheses.
fn split_top(s: &str) -> Vec<&str> {
    let (mut out, mut depth, mut start) = (Vec::new(), 0, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn is_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/')
}

fn is_key(k: &str) -> bool {
    !k.is_empty() && k.chars().all(is_key_char)
}

fn label_requirement(p: &str) -> Option<(String, Op)> {
    if let Some(k) = p.strip_prefix('!') {
        return is_key(k.trim()).then(|| (k.trim().to_string(), Op::Exists(false)));
    }
    let end = p.find(|c: char| !is_key_char(c)).unwrap_or(p.len());
    let (key, rest) = (&p[..end], p[end..].trim());
    if !is_key(key) {
        return None;
    }
    let set = |v: &str| -> Option<Vec<String>> {
        let inner = v.trim().strip_prefix('(')?.strip_suffix(')')?;
        Some(inner.split(',').map(|x| x.trim().to_string()).collect())
    };
    let op = if rest.is_empty() {
        Op::Exists(true)
    } else if let Some(v) = rest.strip_prefix("!=") {
        Op::In(false, vec![v.trim().into()])
    } else if let Some(v) = rest.strip_prefix("==").or_else(|| rest.strip_prefix('=')) {
        Op::In(true, vec![v.trim().into()])
    } else if let Some(v) = rest.strip_prefix("notin") {
        Op::In(false, set(v)?)
    } else {
        Op::In(true, set(rest.strip_prefix("in")?)?)
    };
    Some((key.to_string(), op))
}

impl Selector {
    /// Parses `labelSelector`; the error is a `400`'s message. Field selectors are not
    /// emulated (neither the operator nor the suite uses one).
    pub fn parse(labels: &str, fields: &str) -> Result<Self, String> {
        if !fields.is_empty() {
            return Err(format!("field selectors are not emulated: {fields}"));
        }
        let mut s = Selector::default();
        for p in split_top(labels)
            .into_iter()
            .filter(|_| !labels.trim().is_empty())
        {
            let r = label_requirement(p.trim())
                .ok_or_else(|| format!("unable to parse requirement: {p:?}"))?;
            s.labels.push(r);
        }
        Ok(s)
    }

    pub fn matches(&self, obj: &Value) -> bool {
        let label = |k: &str| obj["metadata"]["labels"][k].as_str();
        self.labels.iter().all(|(k, op)| match op {
            Op::Exists(e) => label(k).is_some() == *e,
            Op::In(inside, vs) => label(k).is_some_and(|v| vs.iter().any(|x| x == v)) == *inside,
        })
    }
}
