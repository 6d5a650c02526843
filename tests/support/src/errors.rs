//! `metav1.Status` error bodies, modelled on `k8s.io/apimachinery/pkg/api/errors`.

use crate::resources::ResourceDef;
use serde_json::{Value, json};

/// A failed API call, rendered as a `Status` object.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
    /// The `Retry-After` header, in seconds.
    pub retry_after: Option<u64>,
}

/// Why a write carrying a stale `resourceVersion` is a conflict.
pub(crate) const MODIFIED: &str =
    "the object has been modified; please apply your changes to the latest version and try again";

/// `details` naming an object of a resource.
fn details(group: &str, plural: &str, name: &str) -> Value {
    let mut d = json!({"kind": plural});
    if !name.is_empty() {
        d["name"] = json!(name);
    }
    if !group.is_empty() {
        d["group"] = json!(group);
    }
    d
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            details: None,
            retry_after: None,
        }
    }

    fn about(mut self, res: &ResourceDef, name: &str) -> Self {
        self.details = Some(details(&res.group, &res.plural, name));
        self
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    pub fn not_found(res: &ResourceDef, name: &str) -> Self {
        let message = format!("{} \"{name}\" not found", res.qualified());
        Self::new(404, "NotFound", message).about(res, name)
    }

    pub fn namespace_not_found(ns: &str) -> Self {
        let mut e = Self::new(404, "NotFound", format!("namespaces \"{ns}\" not found"));
        e.details = Some(details("", "namespaces", ns));
        e
    }

    /// A path or method this server does not serve.
    pub fn not_served() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
    }

    pub fn already_exists(res: &ResourceDef, name: &str) -> Self {
        let message = format!("{} \"{name}\" already exists", res.qualified());
        Self::new(409, "AlreadyExists", message).about(res, name)
    }

    pub fn conflict(res: &ResourceDef, name: &str, why: impl std::fmt::Display) -> Self {
        let message = format!(
            "Operation cannot be fulfilled on {} \"{name}\": {why}",
            res.qualified()
        );
        Self::new(409, "Conflict", message).about(res, name)
    }

    pub fn forbidden(res: &ResourceDef, name: &str, why: impl std::fmt::Display) -> Self {
        let message = format!("{} \"{name}\" is forbidden: {why}", res.qualified());
        Self::new(403, "Forbidden", message).about(res, name)
    }

    /// `422 Invalid` with one cause: `field` is `reason` (`FieldValueForbidden`, …), `body` is
    /// the cause's message (`Forbidden: …`).
    pub fn invalid(res: &ResourceDef, name: &str, field: &str, reason: &str, body: &str) -> Self {
        let kind = if res.group.is_empty() {
            res.kind.clone()
        } else {
            format!("{}.{}", res.kind, res.group)
        };
        let mut e = Self::new(
            422,
            "Invalid",
            format!("{kind} \"{name}\" is invalid: {field}: {body}"),
        );
        let mut d = details(&res.group, &res.plural, name);
        d["kind"] = json!(res.kind);
        d["causes"] = json!([{"reason": reason, "message": body, "field": field}]);
        e.details = Some(d);
        e
    }

    /// A JSON patch whose operations cannot be applied (a failed `test`, a missing path):
    /// exactly kube-apiserver's answer, `422 Invalid` with the generic message and empty details.
    pub fn json_patch_failed() -> Self {
        let mut e = Self::new(422, "Invalid", generic_message(422));
        e.details = Some(json!({}));
        e
    }

    pub fn expired(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    pub fn method_not_allowed() -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            generic_message(405).to_string() + " (not emulated by kube-test-apiserver)",
        )
    }

    /// An error for an HTTP status, as injected by a [`crate::Fault`].
    pub fn for_code(code: u16, group: &str, plural: &str, name: &str) -> Self {
        let reason = match code {
            400 => "BadRequest",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "NotFound",
            405 => "MethodNotAllowed",
            409 => "Conflict",
            410 => "Expired",
            422 => "Invalid",
            429 => "TooManyRequests",
            500 => "InternalError",
            503 => "ServiceUnavailable",
            504 => "Timeout",
            _ => "Unknown",
        };
        let resource = [plural, group].join(".");
        let message = match code {
            404 => format!("{} \"{name}\" not found", resource.trim_end_matches('.')),
            409 => format!(
                "Operation cannot be fulfilled on {} \"{name}\": {MODIFIED}",
                resource.trim_end_matches('.')
            ),
            422 => format!(
                "{} \"{name}\" is invalid: <nil>: Invalid value: null: injected fault",
                resource.trim_end_matches('.')
            ),
            _ => generic_message(code).to_string(),
        };
        let mut e = Self::new(code, reason, message);
        let mut d = details(group, plural, name);
        if code == 422 {
            // A refused value (with its cause), not a failed JSON patch `test`.
            d["causes"] = json!([{"reason": "FieldValueInvalid", "message": "Invalid value: null: injected fault", "field": "<nil>"}]);
        }
        e.details = Some(d);
        e
    }

    /// The `Status` body.
    pub fn to_status(&self) -> Value {
        let mut s = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": self.message, "reason": self.reason, "code": self.code,
        });
        if let Some(d) = &self.details {
            s["details"] = d.clone();
        }
        s
    }
}

/// The message kube-apiserver gives with a bare status code.
fn generic_message(code: u16) -> &'static str {
    match code {
        404 => "the server could not find the requested resource",
        405 => "the server does not allow this method on the requested resource",
        409 => "the server reported a conflict",
        410 => "the resource has expired",
        422 => "the server rejected our request due to an error in our request",
        429 => "the server has received too many requests and has asked us to try again later",
        500 => "an error on the server (\"\") has prevented the request from succeeding",
        503 => "the server is currently unable to handle the request",
        504 => {
            "the server was unable to return a response in the time allotted, but may still be processing the request"
        }
        _ => "an error on the server has prevented the request from succeeding",
    }
}
