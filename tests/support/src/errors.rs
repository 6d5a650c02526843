//! `metav1.Status` error bodies and `field.Error` formatting, modelled on the
//! real apiserver's `k8s.io/apimachinery/pkg/api/errors` package.

use serde_json::{Value, json};

/// A failed API call, rendered as a `Status` object.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub code: u16,
    pub reason: String,
    pub message: String,
    pub details: Option<Value>,
    /// Extra response headers (e.g. `Retry-After`).
    pub retry_after: Option<u64>,
}

/// What kind of `field.Error` this is (`field.ErrorType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FieldErrKind {
    Invalid,
    Required,
    NotSupported,
    Duplicate,
    TooLong,
    TooMany,
    Forbidden,
}

/// One `field.Error`.
#[derive(Debug, Clone)]
pub(crate) struct FieldErr {
    pub kind: FieldErrKind,
    pub field: String,
    pub bad_value: Option<Value>,
    pub detail: String,
}

impl FieldErr {
    pub fn new(
        kind: FieldErrKind,
        field: impl Into<String>,
        bad_value: Option<Value>,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            kind,
            field: field.into(),
            bad_value,
            detail: detail.into(),
        }
    }

    pub fn invalid(field: impl Into<String>, value: Value, detail: impl Into<String>) -> Self {
        Self::new(FieldErrKind::Invalid, field, Some(value), detail)
    }

    pub fn required(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(FieldErrKind::Required, field, None, detail)
    }

    pub fn forbidden(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(FieldErrKind::Forbidden, field, None, detail)
    }

    fn type_str(&self) -> &'static str {
        match self.kind {
            FieldErrKind::Invalid => "Invalid value",
            FieldErrKind::Required => "Required value",
            FieldErrKind::NotSupported => "Unsupported value",
            FieldErrKind::Duplicate => "Duplicate value",
            FieldErrKind::TooLong => "Too long",
            FieldErrKind::TooMany => "Too many",
            FieldErrKind::Forbidden => "Forbidden",
        }
    }

    /// The `reason` of a `StatusCause`.
    pub fn cause_reason(&self) -> &'static str {
        match self.kind {
            FieldErrKind::Invalid => "FieldValueInvalid",
            FieldErrKind::Required => "FieldValueRequired",
            FieldErrKind::NotSupported => "FieldValueNotSupported",
            FieldErrKind::Duplicate => "FieldValueDuplicate",
            FieldErrKind::TooLong => "FieldValueTooLong",
            FieldErrKind::TooMany => "FieldValueTooMany",
            FieldErrKind::Forbidden => "FieldValueForbidden",
        }
    }

    /// `field.Error.ErrorBody()`.
    pub fn body(&self) -> String {
        let mut s = self.type_str().to_string();
        let omit_value = matches!(
            self.kind,
            FieldErrKind::Required | FieldErrKind::Forbidden | FieldErrKind::TooLong
        );
        if !omit_value && let Some(v) = &self.bad_value {
            s.push_str(": ");
            s.push_str(&render_value(v));
        }
        if !self.detail.is_empty() {
            s.push_str(": ");
            s.push_str(&self.detail);
        }
        s
    }

    pub fn field_or_nil(&self) -> &str {
        if self.field.is_empty() {
            "<nil>"
        } else {
            &self.field
        }
    }
}

impl std::fmt::Display for FieldErr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field_or_nil(), self.body())
    }
}

/// Values are printed like Go's `%q` for strings and JSON for everything else.
pub(crate) fn render_value(v: &Value) -> String {
    match v {
        Value::String(s) => serde_json::to_string(s).unwrap_or_default(),
        other => other.to_string(),
    }
}

/// Reason and default message for a bare HTTP status code.
pub(crate) fn reason_for_code(code: u16) -> (&'static str, &'static str) {
    match code {
        400 => (
            "BadRequest",
            "the server rejected our request for an unknown reason",
        ),
        401 => ("Unauthorized", "Unauthorized"),
        403 => ("Forbidden", "forbidden"),
        404 => (
            "NotFound",
            "the server could not find the requested resource",
        ),
        405 => (
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        ),
        409 => ("Conflict", "the server reported a conflict"),
        410 => ("Expired", "the resource has expired"),
        413 => ("RequestEntityTooLarge", "the request entity is too large"),
        415 => (
            "UnsupportedMediaType",
            "the server does not support the media type",
        ),
        422 => (
            "Invalid",
            "the server rejected our request due to an error in our request",
        ),
        429 => (
            "TooManyRequests",
            "the server has received too many requests and has asked us to try again later",
        ),
        500 => (
            "InternalError",
            "an error on the server (\"\") has prevented the request from succeeding",
        ),
        503 => (
            "ServiceUnavailable",
            "the server is currently unable to handle the request",
        ),
        504 => (
            "Timeout",
            "the server was unable to return a response in the time allotted, but may still be processing the request",
        ),
        _ => (
            "Unknown",
            "an error on the server has prevented the request from succeeding",
        ),
    }
}

/// Identifies the resource an error is about (`schema.GroupResource` + kind).
#[derive(Debug, Clone, Default)]
pub(crate) struct ResRef {
    pub group: String,
    pub plural: String,
    pub kind: String,
}

impl ResRef {
    /// `resource.group` (or just `resource` for core).
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// `Kind.group` (or just `Kind` for core).
    pub fn qualified_kind(&self) -> String {
        if self.group.is_empty() {
            self.kind.clone()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }

    fn details(&self, name: &str) -> Value {
        let mut d = serde_json::Map::new();
        if !name.is_empty() {
            d.insert("name".into(), json!(name));
        }
        if !self.group.is_empty() {
            d.insert("group".into(), json!(self.group));
        }
        d.insert("kind".into(), json!(self.plural));
        Value::Object(d)
    }
}

impl ApiError {
    pub fn new(code: u16, reason: &str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.into(),
            message: message.into(),
            details: None,
            retry_after: None,
        }
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    pub fn bad_request(msg: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", msg)
    }

    pub fn not_found(r: &ResRef, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{}\" not found", r.qualified(), name),
        )
        .with_details(r.details(name))
    }

    pub fn namespace_not_found(ns: &str) -> Self {
        Self::new(404, "NotFound", format!("namespaces \"{ns}\" not found"))
            .with_details(json!({"name": ns, "kind": "namespaces"}))
    }

    /// 404 for a path that is not served at all.
    pub fn no_route() -> Self {
        Self::new(404, "NotFound", "the server could not find the requested resource")
            .with_details(json!({"causes": [{"reason": "UnexpectedServerResponse", "message": "404 page not found"}]}))
    }

    pub fn already_exists(r: &ResRef, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{} \"{}\" already exists", r.qualified(), name),
        )
        .with_details(r.details(name))
    }

    pub fn conflict(r: &ResRef, name: &str, why: impl std::fmt::Display) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{}\": {}",
                r.qualified(),
                name,
                why
            ),
        )
        .with_details(r.details(name))
    }

    pub fn stale(r: &ResRef, name: &str) -> Self {
        Self::conflict(
            r,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    pub fn forbidden(r: &ResRef, name: &str, why: impl std::fmt::Display) -> Self {
        let msg = if name.is_empty() {
            format!("{} is forbidden: {}", r.qualified(), why)
        } else {
            format!("{} \"{}\" is forbidden: {}", r.qualified(), name, why)
        };
        Self::new(403, "Forbidden", msg).with_details(r.details(name))
    }

    pub fn invalid(r: &ResRef, name: &str, errs: &[FieldErr]) -> Self {
        let list = if errs.len() == 1 {
            errs[0].to_string()
        } else {
            format!(
                "[{}]",
                errs.iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        let causes: Vec<Value> = errs
            .iter()
            .map(|e| json!({"reason": e.cause_reason(), "message": e.body(), "field": e.field_or_nil()}))
            .collect();
        let mut details = serde_json::Map::new();
        if !name.is_empty() {
            details.insert("name".into(), json!(name));
        }
        if !r.group.is_empty() {
            details.insert("group".into(), json!(r.group));
        }
        details.insert("kind".into(), json!(r.kind));
        details.insert("causes".into(), Value::Array(causes));
        Self::new(
            422,
            "Invalid",
            format!("{} \"{}\" is invalid: {}", r.qualified_kind(), name, list),
        )
        .with_details(Value::Object(details))
    }

    /// A JSON patch whose operations cannot be applied (a failed `test`, a missing path):
    /// exactly the real apiserver's answer, `422 Invalid` with the generic message and empty
    /// details (`{}`), whatever the operation.
    pub fn json_patch_failed() -> Self {
        let (reason, message) = reason_for_code(422);
        Self::new(422, reason, message).with_details(json!({}))
    }

    pub fn expired(msg: impl Into<String>) -> Self {
        Self::new(410, "Expired", msg)
    }

    pub fn method_not_allowed(msg: impl Into<String>) -> Self {
        Self::new(405, "MethodNotAllowed", msg)
    }

    pub fn unsupported_patch(accepted: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: {accepted}"
            ),
        )
    }

    /// A generic error for an HTTP status (used by fault injection).
    pub fn for_code(code: u16, r: &ResRef, name: &str) -> Self {
        match code {
            404 => Self::not_found(r, name),
            409 => Self::stale(r, name),
            410 => Self::expired("too old resource version"),
            422 => Self::invalid(
                r,
                name,
                &[FieldErr::invalid("", Value::Null, "injected fault")],
            ),
            _ => {
                let (reason, msg) = reason_for_code(code);
                Self::new(code, reason, msg).with_details(r.details(name))
            }
        }
    }

    /// The `Status` body.
    pub fn to_status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            s["details"] = d.clone();
        }
        s
    }
}
