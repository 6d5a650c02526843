//! Label selectors of `key=value` requirements joined by commas: what the operator's endpoint
//! selectors and the suite send. Other requirements (`!=`, `in`, `notin`, `key`, `!key`) are
//! refused with a `400`, so a test starting to use one fails at once.

use serde_json::Value;

/// The label requirements of a list or watch; all must match.
#[derive(Debug, Clone, Default)]
pub(crate) struct Selector {
    labels: Vec<(String, String)>,
}

/// A label key (`slash` allowed) or value made of letters, digits, `-`, `_` and `.`.
fn is_label(s: &str, slash: bool) -> bool {
    let allowed =
        |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') || (slash && c == '/');
    s.chars().all(allowed)
}

impl Selector {
    /// Parses `labelSelector`; the error is a `400`'s message. Field selectors are not
    /// emulated (neither the operator nor the suite uses one).
    pub fn parse(labels: &str, fields: &str) -> Result<Self, String> {
        if !fields.is_empty() {
            return Err(format!("field selectors are not emulated: {fields}"));
        }
        let requirement = |p: &str| {
            let (key, value) = p.split_once('=')?;
            let (key, value) = (key.trim(), value.trim());
            let valid = !key.is_empty() && is_label(key, true) && is_label(value, false);
            valid.then(|| (key.to_string(), value.to_string()))
        };
        let parts = labels.split(',').filter(|_| !labels.trim().is_empty());
        let labels = parts
            .map(|p| requirement(p).ok_or_else(|| format!("unable to parse requirement: {p:?}")));
        Ok(Selector {
            labels: labels.collect::<Result<_, _>>()?,
        })
    }

    pub fn matches(&self, obj: &Value) -> bool {
        let label = |k: &str| obj["metadata"]["labels"][k].as_str();
        self.labels.iter().all(|(k, v)| label(k) == Some(v))
    }
}
