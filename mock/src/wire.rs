//! Request/response plumbing shared by both mocked APIs: the buffered request, body helpers,
//! error bodies in each API's shape.

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

/// Form and query fields whose values are credentials and never recorded.
const SECRET_FIELDS: &[&str] = &["api_token", "refresh_token", "passcode", "access_token"];

/// An API request, fully buffered, with its path split into percent-decoded segments.
#[derive(Debug, Clone)]
pub(crate) struct ApiRequest {
    pub method: Method,
    pub path: String,
    pub segments: Vec<String>,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl ApiRequest {
    /// Builds the request from its parts.
    pub fn new(
        method: Method,
        path: &str,
        query: Option<&str>,
        headers: HeaderMap,
        body: Bytes,
    ) -> ApiRequest {
        let segments = path
            .split('/')
            .filter(|s| !s.is_empty())
            .map(percent_decode)
            .collect();
        ApiRequest {
            method,
            path: path.to_string(),
            segments,
            query: query.map(str::to_string),
            headers,
            body,
        }
    }

    /// A header's value, when present and visible ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The lowercased media type (without parameters).
    pub fn media_type(&self) -> Option<String> {
        self.header(header::CONTENT_TYPE.as_str()).map(|ct| {
            ct.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        })
    }

    /// True when the body is declared as JSON.
    pub fn is_json(&self) -> bool {
        self.media_type()
            .is_some_and(|m| m == "application/json" || m.ends_with("+json"))
    }

    /// True when the body is declared as an HTML form.
    pub fn is_form(&self) -> bool {
        self.media_type()
            .is_some_and(|m| m == "application/x-www-form-urlencoded")
    }

    /// Decoded query pairs.
    pub fn query_pairs(&self) -> Vec<(String, String)> {
        self.query
            .as_deref()
            .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default()
    }

    /// First value of a query parameter.
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query_pairs()
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }

    /// Decoded form pairs of the body.
    pub fn form_pairs(&self) -> Vec<(String, String)> {
        form_urlencoded::parse(&self.body).into_owned().collect()
    }

    /// The body as recorded in the journal: `Null` when empty, form bodies as an object,
    /// JSON as JSON, anything else as (truncated) text. Credentials are redacted.
    pub fn journal_body(&self) -> Value {
        if self.body.is_empty() {
            return Value::Null;
        }
        if self.is_form() {
            let mut map = Map::new();
            for (k, v) in self.form_pairs() {
                let v = if SECRET_FIELDS.contains(&k.as_str()) {
                    "***".to_string()
                } else {
                    v
                };
                map.insert(k, Value::String(v));
            }
            return Value::Object(map);
        }
        match serde_json::from_slice::<Value>(&self.body) {
            Ok(v) => v,
            Err(_) => {
                let text = String::from_utf8_lossy(&self.body);
                Value::String(text.chars().take(4096).collect())
            }
        }
    }

    /// The query string as recorded in the journal (credentials redacted).
    pub fn journal_query(&self) -> Option<String> {
        let q = self.query.as_deref()?;
        let pairs = self.query_pairs();
        if !pairs
            .iter()
            .any(|(k, _)| SECRET_FIELDS.contains(&k.as_str()))
        {
            return Some(q.to_string());
        }
        let mut ser = form_urlencoded::Serializer::new(String::new());
        for (k, v) in &pairs {
            if SECRET_FIELDS.contains(&k.as_str()) {
                ser.append_pair(k, "***");
            } else {
                ser.append_pair(k, v);
            }
        }
        Some(ser.finish())
    }

    /// Name of the header that carried credentials, if any (never its value).
    pub fn auth_header_name(&self) -> Option<String> {
        ["authorization", "x-auth-token", "csp-auth-token"]
            .iter()
            .find(|h| self.headers.contains_key(**h))
            .map(|h| (*h).to_string())
    }
}

/// Decodes `%XX` escapes in a path segment (a `+` stays a `+`).
pub(crate) fn percent_decode(s: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            b'A'..=b'F' => Some(b - b'A' + 10),
            _ => None,
        }
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push(h * 16 + l);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A failed request, before it is rendered in one API's error shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fail {
    pub status: u16,
    pub message: String,
}

impl Fail {
    /// A failure with a status and message.
    pub fn new(status: u16, message: impl Into<String>) -> Fail {
        Fail {
            status,
            message: message.into(),
        }
    }

    /// 400 Bad Request.
    pub fn bad_request(message: impl Into<String>) -> Fail {
        Fail::new(400, message)
    }

    /// 404 Not Found.
    pub fn not_found(message: impl Into<String>) -> Fail {
        Fail::new(404, message)
    }
}

/// Result of a handler: a response or a failure to render.
pub(crate) type Outcome = Result<Response, Fail>;

fn status_code(status: u16) -> StatusCode {
    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// The canonical reason phrase of a status code.
pub(crate) fn reason(status: u16) -> &'static str {
    status_code(status).canonical_reason().unwrap_or("Error")
}

/// A JSON response.
pub(crate) fn json_response(status: u16, body: &Value) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut resp = (status_code(status), Body::from(bytes)).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// A response without a body.
pub(crate) fn empty_response(status: u16) -> Response {
    status_code(status).into_response()
}

/// The UserInvite (Wavefront) error body: `{"status":{"result":"ERROR","message":..,"code":N}}`.
pub(crate) fn wf_error_body(status: u16, message: &str) -> Value {
    json!({"status": {"result": "ERROR", "message": message, "code": status}})
}

/// A UserInvite error response.
pub(crate) fn wf_error(fail: &Fail) -> Response {
    json_response(fail.status, &wf_error_body(fail.status, &fail.message))
}

/// A UserInvite `ResponseContainer` wrapping `response`, with status code `code` in the body.
pub(crate) fn wf_wrapped(code: u16, message: Option<&str>, response: Value) -> Value {
    let mut status = json!({"result": "OK", "code": code});
    if let Some(m) = message {
        status["message"] = Value::String(m.to_string());
    }
    json!({"status": status, "response": response})
}

/// Adds `Retry-After` to a response.
pub(crate) fn with_retry_after(mut resp: Response, secs: Option<u64>) -> Response {
    if let Some(s) = secs
        && let Ok(v) = HeaderValue::from_str(&s.to_string())
    {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

/// Parses a JSON body; refuses another media type (415) and malformed JSON (400).
pub(crate) fn json_body(req: &ApiRequest) -> Result<Value, Fail> {
    if !req.is_json() {
        return Err(Fail::new(
            415,
            "HTTP 415 Unsupported Media Type: the body must be application/json",
        ));
    }
    if req.body.iter().all(u8::is_ascii_whitespace) {
        return Err(Fail::bad_request("Request body is required"));
    }
    serde_json::from_slice(&req.body)
        .map_err(|e| Fail::bad_request(format!("Unable to process JSON: {e}")))
}

/// A JSON value that must be an array of strings.
pub(crate) fn string_list(v: &Value, what: &str) -> Result<Vec<String>, Fail> {
    let Value::Array(items) = v else {
        return Err(Fail::bad_request(format!(
            "{what} must be a JSON array of strings"
        )));
    };
    items
        .iter()
        .map(|i| match i {
            Value::String(s) => Ok(s.clone()),
            _ => Err(Fail::bad_request(format!(
                "{what} must be a JSON array of strings"
            ))),
        })
        .collect()
}

/// Optional field of an object that must be an array of strings when present and not null.
pub(crate) fn opt_string_list(
    obj: &Map<String, Value>,
    field: &str,
    context: &str,
) -> Result<Option<Vec<String>>, Fail> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => string_list(v, &format!("{field}{context}")).map(Some),
    }
}

/// Optional field of an object that must be a string when present and not null.
pub(crate) fn opt_string(
    obj: &Map<String, Value>,
    field: &str,
    context: &str,
) -> Result<Option<String>, Fail> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(Fail::bad_request(format!(
            "{field}{context} must be a string"
        ))),
    }
}

/// A small deterministic mixer (splitmix64) for request ids.
pub(crate) fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding_keeps_plus_and_decodes_escapes() {
        assert_eq!(percent_decode("a%2Bb%40c.com"), "a+b@c.com");
        assert_eq!(percent_decode("a+b@c.com"), "a+b@c.com");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("%41"), "A");
    }

    #[test]
    fn journal_redacts_credentials() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        let req = ApiRequest::new(
            Method::POST,
            "/csp/gateway/am/api/auth/api-tokens/authorize",
            Some("refresh_token=secret&x=1"),
            headers,
            Bytes::from_static(b"api_token=secret&other=1"),
        );
        let body = req.journal_body();
        assert_eq!(body["api_token"], "***");
        assert_eq!(body["other"], "1");
        let q = req.journal_query().unwrap_or_default();
        assert!(!q.contains("secret"), "{q}");
    }
}
