//! Lenient decoding of the APIs' answers: bare objects, lists or `{status, response}`
//! wrappers; unknown fields ignored; numbers that arrive as strings accepted.

use serde_json::Value;

/// A user as the UserInvite API reports it (`UserModel` / `UserDTO`), reduced to what the
/// operator uses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApiUser {
    /// The user's identifier (usually the email address; `local+customer@domain` on
    /// multi-tenant clusters).
    pub identifier: String,
    /// The customer the user belongs to.
    pub customer: Option<String>,
    /// Permissions.
    pub groups: Vec<String>,
    /// User group ids.
    pub user_groups: Vec<String>,
    /// Role ids.
    pub roles: Vec<String>,
    /// Last login, in epoch milliseconds; absent until the user first logs in.
    pub last_successful_login: Option<i64>,
}

/// Unwraps `{status, response}` and returns the payload (or the value itself).
pub fn unwrap_response(value: &Value) -> &Value {
    match value {
        Value::Object(map) if map.contains_key("status") && map.contains_key("response") => {
            &map["response"]
        }
        other => other,
    }
}

/// The `status.message` of a wrapped answer, when it carries a warning (e.g. code 202,
/// "Invalid user groups found and ignored [...]").
pub fn wrapper_warning(value: &Value) -> Option<String> {
    let status = value.get("status")?;
    let code = status.get("code").and_then(as_i64).unwrap_or(200);
    let message = status.get("message").and_then(Value::as_str)?;
    (code != 200 && !message.is_empty()).then(|| message.to_string())
}

/// Decodes every user found in an answer: a bare `UserModel`, a list of them, `{items: [...]}`
/// or any of those inside a `{status, response}` wrapper. An empty body yields no users.
pub fn users(body: &[u8]) -> Result<Vec<ApiUser>, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let payload = unwrap_response(&value);
    let list: Vec<&Value> = match payload {
        Value::Array(items) => items.iter().collect(),
        Value::Object(map) => match map.get("items") {
            Some(Value::Array(items)) => items.iter().collect(),
            _ => vec![payload],
        },
        Value::Null => Vec::new(),
        other => return Err(format!("expected a user, found {other}")),
    };
    Ok(list.into_iter().filter_map(user).collect())
}

/// Decodes one user object; `None` if it has no identifier.
pub fn user(value: &Value) -> Option<ApiUser> {
    let identifier = value
        .get("identifier")
        .or_else(|| value.get("id"))
        .or_else(|| value.get("emailAddress"))
        .and_then(Value::as_str)?
        .to_string();
    Some(ApiUser {
        identifier,
        customer: value
            .get("customer")
            .and_then(Value::as_str)
            .map(str::to_string),
        groups: ids(value.get("groups")),
        user_groups: user_group_ids(value.get("userGroups")),
        roles: ids(value.get("roles")),
        last_successful_login: value.get("lastSuccessfulLogin").and_then(as_i64),
    })
}

/// User group ids, without the system group "Everyone" that every user is always in (so it
/// never shows as drift).
fn user_group_ids(value: Option<&Value>) -> Vec<String> {
    let Some(Value::Array(items)) = value else {
        return Vec::new();
    };
    items
        .iter()
        .filter(|g| g.get("name").and_then(Value::as_str) != Some("Everyone"))
        .filter_map(|item| match item {
            Value::String(s) => Some(s.clone()),
            Value::Object(o) => o.get("id").and_then(Value::as_str).map(str::to_string),
            _ => None,
        })
        .collect()
}

/// A list of strings or of objects with an `id` (user groups and roles come either way).
fn ids(value: Option<&Value>) -> Vec<String> {
    let Some(Value::Array(items)) = value else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|item| match item {
            Value::String(s) => Some(s.clone()),
            Value::Object(o) => o.get("id").and_then(Value::as_str).map(str::to_string),
            _ => None,
        })
        .collect()
}

/// An integer that may arrive as a JSON number or a string.
pub fn as_i64(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// `text` cut to at most `max` bytes at a character boundary, marked when cut (for errors that
/// quote an answer).
pub fn excerpt(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

/// Why a success (2xx) answer cannot be trusted, if it cannot: a body that is not JSON (a
/// login page of a proxy, say) or not an object or list, or an error container of either API (`{status: {result:
/// ERROR}}`, a `CspErrorResponse` with `statusCode` >= 400). An empty body is fine.
pub fn untrusted_success(body: &[u8]) -> Option<String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    let value: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return Some(format!("a success answer that is not JSON: {e}")),
    };
    if !matches!(value, Value::Object(_) | Value::Array(_) | Value::Null) {
        return Some(format!("a success answer of an unexpected shape: {value}"));
    }
    let wavefront_error = value
        .get("status")
        .and_then(|s| s.get("result"))
        .and_then(Value::as_str)
        == Some("ERROR");
    let csp_error = value
        .get("statusCode")
        .and_then(as_i64)
        .is_some_and(|c| c >= 400)
        || value.get("cspErrorCode").is_some();
    (wavefront_error || csp_error).then(|| {
        format!(
            "a success answer carrying an error: {}",
            error_message(body).unwrap_or_else(|| "no message".into())
        )
    })
}

/// The human message of an error answer of either API: `{status: {message}}` (UserInvite),
/// `CspErrorResponse {message}` (OrgInvitation), `error_message(s)`, or a short plain body.
pub fn error_message(body: &[u8]) -> Option<String> {
    let value: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(_) => {
            let text = String::from_utf8_lossy(body).trim().to_string();
            return (!text.is_empty() && text.len() <= 500).then_some(text);
        }
    };
    let candidates = [
        value.pointer("/status/message"),
        value.get("message"),
        value.get("error_message"),
        value.pointer("/error_messages/0"),
        value.get("error_description"),
        value.get("error"),
    ];
    candidates
        .into_iter()
        .flatten()
        .find_map(|v| v.as_str().filter(|s| !s.is_empty()).map(str::to_string))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MODEL: &str = r#"{"identifier":"a@example.com","customer":"acme","groups":["x"],
        "userGroups":[{"id":"g1","name":"Everyone","properties":{"nameEditable":false}}],
        "roles":[{"id":"r1","name":"role","restrictedPermissions":[]}],"extra":{"new":1}}"#;

    #[test]
    fn bare_wrapped_list_and_empty_answers_decode() {
        let bare = users(MODEL.as_bytes()).unwrap();
        assert_eq!(bare.len(), 1);
        assert_eq!(bare[0].identifier, "a@example.com");
        assert!(bare[0].user_groups.is_empty(), "Everyone is not reported");
        assert_eq!(bare[0].roles, vec!["r1"]);
        let wrapped = format!(r#"{{"status":{{"result":"OK","code":200}},"response":{MODEL}}}"#);
        assert_eq!(users(wrapped.as_bytes()).unwrap(), bare);
        let list = format!("[{MODEL},{MODEL}]");
        assert_eq!(users(list.as_bytes()).unwrap().len(), 2);
        let items = format!(
            r#"{{"status":{{"result":"OK","code":200}},"response":{{"items":[{MODEL}]}}}}"#
        );
        assert_eq!(users(items.as_bytes()).unwrap(), bare);
        assert!(users(b"").unwrap().is_empty());
        assert!(users(b"not json").is_err());
    }

    #[test]
    fn wrapper_warning_is_reported_for_non_200_codes() {
        let v: Value = serde_json::from_str(
            r#"{"status":{"result":"OK","message":"Invalid user groups found and ignored [x]","code":202},"response":{}}"#,
        )
        .unwrap();
        assert_eq!(
            wrapper_warning(&v).as_deref(),
            Some("Invalid user groups found and ignored [x]")
        );
        let ok: Value = serde_json::from_str(r#"{"status":{"result":"OK","code":200}}"#).unwrap();
        assert_eq!(wrapper_warning(&ok), None);
    }

    #[test]
    fn error_messages_of_both_apis() {
        assert_eq!(
            error_message(br#"{"status":{"result":"ERROR","message":"no such group","code":400}}"#)
                .as_deref(),
            Some("no such group")
        );
        assert_eq!(
            error_message(br#"{"statusCode":404,"message":"Organization not found","moduleCode":"540","cspErrorCode":"540.1"}"#)
                .as_deref(),
            Some("Organization not found")
        );
        assert_eq!(
            error_message(b"Bad Gateway").as_deref(),
            Some("Bad Gateway")
        );
        assert_eq!(error_message(b""), None);
    }

    mod properties {
        use proptest::prelude::*;

        use super::super::*;
        use crate::invite::json_strategy::json;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(1024))]

            #[test]
            fn any_bytes_decode_or_fail_without_panicking(body in prop::collection::vec(any::<u8>(), 0..512)) {
                let _ = users(&body);
                let _ = error_message(&body);
            }

            #[test]
            fn any_json_decodes_or_fails_without_panicking(value in json()) {
                let body = serde_json::to_vec(&value).unwrap();
                let _ = users(&body);
                let _ = error_message(&body);
                let _ = wrapper_warning(&value);
                let _ = unwrap_response(&value);
                let _ = user(&value);
                let _ = as_i64(&value);
            }

            #[test]
            fn users_in_any_wrapper_are_found(
                ids in prop::collection::vec("[a-z]{1,8}(\\+[a-z]{1,4})?@[a-z]{1,8}\\.com", 0..20),
                wrapped in any::<bool>(),
                as_items in any::<bool>(),
            ) {
                let list: Vec<serde_json::Value> = ids
                    .iter()
                    .map(|id| serde_json::json!({"identifier": id, "groups": ["g"], "extra": {"x": 1}}))
                    .collect();
                let mut payload = if as_items {
                    serde_json::json!({"items": list})
                } else {
                    serde_json::json!(list)
                };
                if wrapped {
                    payload = serde_json::json!({"status": {"result": "OK", "code": 200}, "response": payload});
                }
                let found = users(&serde_json::to_vec(&payload).unwrap()).unwrap();
                let found: Vec<String> = found.into_iter().map(|u| u.identifier).collect();
                prop_assert_eq!(found, ids);
            }
        }
    }
}
