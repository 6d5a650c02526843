//! The HTTP layer: routing, request records, fault injection, and the get, list, watch,
//! create, update, patch and delete handlers.

use crate::errors::ApiError;
use crate::selectors::Selector;
use crate::store::{self, Ctx, Store, Watcher};
use crate::{Fault, RecordedRequest};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, Uri, header};
use axum::response::Response;
use base64::Engine;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::mpsc;

/// State shared by the HTTP handlers and the public handle.
pub(crate) struct Shared {
    pub store: Mutex<Store>,
    pub addr: SocketAddr,
    pub bookmark_interval: Mutex<Duration>,
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What a resource path names.
#[derive(Debug, Default)]
struct Target {
    group: String,
    version: String,
    plural: String,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

/// Parses `/api/v1/...` and `/apis/group/version/...` resource paths.
fn parse_target(path: &str) -> Option<Target> {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let (group, version, mut rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return None,
    };
    let mut t = Target {
        group: group.into(),
        version: version.into(),
        ..Default::default()
    };
    // `namespaces/{ns}/...` scopes the path, except a namespace's own subresources.
    if let ["namespaces", ns, more @ ..] = rest
        && (more.len() > 1 || more.len() == 1 && !(group.is_empty() && more[0] == "status"))
    {
        t.namespace = Some(ns.to_string());
        rest = more;
    }
    let (plural, name, sub) = match rest {
        [p] => (p, None, None),
        [p, n] => (p, Some(n), None),
        [p, n, s] => (p, Some(n), Some(s)),
        _ => return None,
    };
    t.plural = plural.to_string();
    t.name = name.map(|n| n.to_string());
    t.subresource = sub.map(|s| s.to_string());
    Some(t)
}

fn json_response(code: u16, v: &Value) -> Response {
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, "application/json")
        .body(axum::body::Body::from(v.to_string()))
        .expect("a valid response")
}

fn error_response(e: &ApiError) -> Response {
    let mut r = json_response(e.code, &e.to_status());
    if let Some(s) = e.retry_after {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(s));
    }
    r
}

/// The RBAC verb of a request.
fn rbac_verb(method: &Method, named: bool, watch: bool) -> &'static str {
    match (method, named) {
        (&Method::GET, _) if watch => "watch",
        (&Method::GET, true) => "get",
        (&Method::GET, false) => "list",
        (&Method::POST, _) => "create",
        (&Method::PUT, _) => "update",
        (&Method::PATCH, _) => "patch",
        (&Method::DELETE, true) => "delete",
        (&Method::DELETE, false) => "deletecollection",
        _ => "unknown",
    }
}

/// The axum fallback handler: serves every request.
pub(crate) async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let query: HashMap<String, String> =
        form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
            .into_owned()
            .filter(|(_, v)| !v.is_empty())
            .collect();
    let target = parse_target(uri.path());
    let watch = query.get("watch").is_some_and(|w| w == "true" || w == "1");
    let named = target.as_ref().is_some_and(|t| t.name.is_some());
    let t = target.as_ref();
    let mut rec = RecordedRequest {
        verb: if t.is_some() {
            rbac_verb(&method, named, watch)
        } else {
            "get"
        }
        .into(),
        api_group: t.map(|t| t.group.clone()).unwrap_or_default(),
        resource: t.map(|t| t.plural.clone()).unwrap_or_default(),
        subresource: t.and_then(|t| t.subresource.clone()),
        namespace: t.and_then(|t| t.namespace.clone()),
        name: t.and_then(|t| t.name.clone()),
        status: 200,
        user_agent: (headers.get(header::USER_AGENT))
            .and_then(|v| v.to_str().ok())
            .map(String::from),
        path: uri.path().to_string(),
    };
    let fault = take_fault(&shared, &rec);
    let resp = match (fault, target) {
        (Some(e), _) => error_response(&e),
        (None, Some(t)) => {
            let content_type = (headers.get(header::CONTENT_TYPE))
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(';').next())
                .unwrap_or_default()
                .trim();
            let body = Body {
                bytes: &body,
                content_type,
            };
            resource_request(&shared, &method, t, &query, body, watch)
        }
        (None, None) if uri.path() == "/version" => json_response(
            200,
            &json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0-kube-test-apiserver", "platform": "linux/amd64"}),
        ),
        (None, None) => error_response(&ApiError::not_served()),
    };
    rec.status = resp.status().as_u16();
    shared.lock().requests.push(rec);
    resp
}

fn take_fault(shared: &Shared, rec: &RecordedRequest) -> Option<ApiError> {
    let mut st = shared.lock();
    let idx = st.faults.iter().position(|f| f.matches(rec))?;
    let f = &mut st.faults[idx];
    let name = rec.name.as_deref().unwrap_or_default();
    let mut e = ApiError::for_code(f.status, &rec.api_group, &rec.resource, name);
    e.retry_after = f.retry_after;
    f.times -= 1;
    if f.times == 0 {
        st.faults.remove(idx);
    }
    Some(e)
}

fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("invalid JSON: {e}")))
}

/// A request body and its content type.
struct Body<'a> {
    bytes: &'a [u8],
    content_type: &'a str,
}

fn resource_request(
    shared: &Arc<Shared>,
    method: &Method,
    t: Target,
    query: &HashMap<String, String>,
    body: Body<'_>,
    watch: bool,
) -> Response {
    let res = shared
        .lock()
        .resources
        .get(&(t.group.clone(), t.plural.clone()))
        .filter(|r| r.serves(&t.version))
        .cloned();
    let Some(res) = res.filter(|r| r.namespaced || t.namespace.is_none()) else {
        return error_response(&ApiError::not_served());
    };
    let status = match t.subresource.as_deref() {
        None => false,
        Some("status") if res.status => true,
        Some(_) => return error_response(&ApiError::not_served()),
    };
    let ctx = Ctx {
        namespace: t
            .namespace
            .clone()
            .filter(|_| res.namespaced)
            .unwrap_or_default(),
        res,
        version: t.version.clone(),
        status,
    };
    let all_namespaces = t.namespace.is_none();
    let render = |o: Value| Store::render(&ctx.res, &o, &ctx.version);
    let result = match (method, t.name.as_deref()) {
        (&Method::GET, None) if watch => return watch_response(shared, query, ctx, all_namespaces),
        (&Method::GET, None) => list(&shared.lock(), query, &ctx, all_namespaces),
        (&Method::GET, Some(name)) => shared.lock().get(&ctx, name).map(|o| (200, render(o))),
        (&Method::POST, None) if !status => parse_json(body.bytes)
            .and_then(|b| shared.lock().create(&ctx, b))
            .map(|o| (201, render(o))),
        (&Method::PUT, Some(name)) => parse_json(body.bytes)
            .and_then(|b| shared.lock().update(&ctx, name, b))
            .map(|o| (200, render(o))),
        (&Method::PATCH, Some(name)) => patch(shared, &ctx, name, body).map(|o| (200, render(o))),
        (&Method::DELETE, Some(name)) if !status => {
            shared.lock().delete(&ctx, name).map(|o| (200, render(o)))
        }
        _ => Err(ApiError::method_not_allowed()),
    };
    match result {
        Ok((code, v)) => json_response(code, &v),
        Err(e) => error_response(&e),
    }
}

/// JSON patch and JSON merge patch.
fn patch(shared: &Shared, ctx: &Ctx, name: &str, body: Body<'_>) -> Result<Value, ApiError> {
    let mut st = shared.lock();
    let mut doc = Store::render(&ctx.res, &st.get(ctx, name)?, &ctx.version);
    match body.content_type {
        "application/json-patch+json" => {
            let p: json_patch::Patch = serde_json::from_slice(body.bytes)
                .map_err(|e| ApiError::bad_request(e.to_string()))?;
            // kube-apiserver's JSON patch treats a `test` of a missing path as comparing with null.
            let ops: Vec<_> = (p.0.into_iter())
                .filter(|op| match op {
                    json_patch::PatchOperation::Test(t) => {
                        !(t.value.is_null() && doc.pointer(t.path.as_str()).is_none())
                    }
                    _ => true,
                })
                .collect();
            json_patch::patch(&mut doc, &ops).map_err(|_| ApiError::json_patch_failed())?;
        }
        "application/merge-patch+json" => json_patch::merge(&mut doc, &parse_json(body.bytes)?),
        _ => {
            return Err(ApiError::new(
                415,
                "UnsupportedMediaType",
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json",
            ));
        }
    }
    st.update(ctx, name, doc)
}

#[derive(serde::Serialize, serde::Deserialize)]
struct ContinueToken {
    rv: u64,
    start: String,
}

fn selector(query: &HashMap<String, String>) -> Result<Selector, ApiError> {
    let q = |k: &str| query.get(k).map(String::as_str).unwrap_or_default();
    Selector::parse(q("labelSelector"), q("fieldSelector")).map_err(ApiError::bad_request)
}

fn key_of(o: &Value) -> String {
    let m = &o["metadata"];
    format!(
        "{}\u{0}{}",
        m["namespace"].as_str().unwrap_or_default(),
        m["name"].as_str().unwrap_or_default()
    )
}

/// A list, paginated with `limit` and `continue`.
fn list(
    st: &Store,
    query: &HashMap<String, String>,
    ctx: &Ctx,
    all: bool,
) -> Result<(u16, Value), ApiError> {
    let sel = selector(query)?;
    let limit: usize = match query.get("limit") {
        Some(l) => l
            .parse()
            .map_err(|_| ApiError::bad_request(format!("invalid limit {l:?}")))?,
        None => 0,
    };
    let (rv, start) = match query.get("continue") {
        Some(tok) => {
            let t: ContinueToken = base64::engine::general_purpose::STANDARD
                .decode(tok)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .ok_or_else(|| ApiError::bad_request("continue key is not valid"))?;
            if t.rv < st.compacted_rv {
                return Err(ApiError::expired(
                    "The provided continue parameter is too old to display a consistent list result.",
                ));
            }
            (t.rv, t.start)
        }
        None => (st.rv, String::new()),
    };
    let ns = (!all).then_some(ctx.namespace.as_str());
    let mut items: Vec<&Value> = (st.list(&ctx.res, ns).into_iter())
        .filter(|o| sel.matches(o) && key_of(o) > start)
        .collect();
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if limit > 0 && items.len() > limit {
        items.truncate(limit);
        let token = serde_json::to_vec(&ContinueToken {
            rv,
            start: key_of(items[limit - 1]),
        });
        metadata["continue"] =
            json!(base64::engine::general_purpose::STANDARD.encode(token.unwrap_or_default()));
    }
    let items: Vec<Value> = (items.into_iter())
        .map(|o| {
            let mut v = Store::render(&ctx.res, o, &ctx.version);
            if !ctx.res.custom
                && let Some(m) = v.as_object_mut()
            {
                // Lists of built-in resources leave out their items' type.
                m.remove("apiVersion");
                m.remove("kind");
            }
            v
        })
        .collect();
    let list = json!({"kind": ctx.res.list_kind, "apiVersion": ctx.res.api_version(&ctx.version), "metadata": metadata, "items": items});
    Ok((200, list))
}

/// Removes the watcher from the store when its stream is dropped.
struct WatchGuard {
    shared: Arc<Shared>,
    id: u64,
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.shared.lock().watchers.retain(|w| w.id != self.id);
    }
}

struct WatchState {
    rx: mpsc::UnboundedReceiver<Bytes>,
    deadline: tokio::time::Instant,
    bookmarks: Option<tokio::time::Interval>,
    ctx: Ctx,
    guard: WatchGuard,
}

fn watch_response(
    shared: &Arc<Shared>,
    query: &HashMap<String, String>,
    ctx: Ctx,
    all: bool,
) -> Response {
    match start_watch(shared, query, ctx, all) {
        Ok(r) => r,
        Err(e) => error_response(&e),
    }
}

/// A watch: from `resourceVersion` (history replay, or `410 Expired` if compacted), or from
/// now after synthetic `ADDED` events; with periodic bookmarks and `timeoutSeconds`.
fn start_watch(
    shared: &Arc<Shared>,
    query: &HashMap<String, String>,
    ctx: Ctx,
    all: bool,
) -> Result<Response, ApiError> {
    let timeout = match query.get("timeoutSeconds").map(|t| t.parse::<u64>()) {
        Some(Ok(n)) if n > 0 => Duration::from_secs(n),
        Some(Err(_)) => return Err(ApiError::bad_request("invalid timeoutSeconds")),
        _ => Duration::from_secs(1800),
    };
    let (tx, rx) = mpsc::unbounded_channel();
    let mut st = shared.lock();
    let id = st.next_watch_id;
    st.next_watch_id += 1;
    let w = Watcher {
        id,
        key: (ctx.res.group.clone(), ctx.res.plural.clone()),
        namespace: (!all).then(|| ctx.namespace.clone()),
        selector: selector(query)?,
        version: ctx.version.clone(),
        tx,
    };
    match query.get("resourceVersion").map(String::as_str) {
        None | Some("0") => {
            for o in st.list(&ctx.res, w.namespace.as_deref()) {
                if w.selector.matches(o) {
                    let _ = w.tx.send(store::watch_line(
                        "ADDED",
                        &Store::render(&ctx.res, o, &ctx.version),
                    ));
                }
            }
            st.watchers.push(w);
        }
        Some(rv) => {
            let rv: u64 = rv
                .parse()
                .map_err(|_| ApiError::bad_request(format!("invalid resource version: {rv}")))?;
            if rv < st.compacted_rv {
                let e = ApiError::expired(format!(
                    "too old resource version: {rv} ({})",
                    st.compacted_rv + 1
                ));
                let _ = w.tx.send(store::watch_line("ERROR", &e.to_status()));
            } else {
                for line in st
                    .history
                    .iter()
                    .filter(|e| e.rv > rv)
                    .filter_map(|e| st.translate(&w, e))
                {
                    let _ = w.tx.send(line);
                }
                st.watchers.push(w);
            }
        }
    }
    drop(st);
    Ok(watch_stream(shared, query, timeout, ctx, id, rx))
}

/// The response of a watch: its queued lines, bookmarks when asked for, until `timeout`.
fn watch_stream(
    shared: &Arc<Shared>,
    query: &HashMap<String, String>,
    timeout: Duration,
    ctx: Ctx,
    id: u64,
    rx: mpsc::UnboundedReceiver<Bytes>,
) -> Response {
    let period = *shared
        .bookmark_interval
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let bookmarks = query
        .get("allowWatchBookmarks")
        .is_some_and(|b| b == "true" || b == "1");
    let start = tokio::time::Instant::now();
    let state = WatchState {
        rx,
        deadline: start + timeout,
        bookmarks: bookmarks.then(|| tokio::time::interval_at(start + period, period)),
        ctx,
        guard: WatchGuard {
            shared: shared.clone(),
            id,
        },
    };
    let stream = futures::stream::unfold(state, |mut s| async move {
        let tick = async {
            match s.bookmarks.as_mut() {
                Some(i) => i.tick().await,
                None => std::future::pending().await,
            }
        };
        let line = tokio::select! {
            biased;
            m = s.rx.recv() => m?,
            _ = tokio::time::sleep_until(s.deadline) => return None,
            _ = tick => {
                let st = s.guard.shared.lock();
                match s.rx.try_recv() {
                    Ok(b) => b,
                    Err(_) => store::watch_line("BOOKMARK", &store::bookmark(&s.ctx.res, &s.ctx.version, st.rv)),
                }
            }
        };
        Some((Ok::<Bytes, Infallible>(line), s))
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .body(axum::body::Body::from_stream(stream))
        .expect("a valid response")
}

impl Fault {
    pub(crate) fn matches(&self, rec: &RecordedRequest) -> bool {
        let is = |want: &Option<String>, got: &Option<String>| want.is_none() || want == got;
        self.verb.as_ref().is_none_or(|v| *v == rec.verb)
            && self.resource.as_ref().is_none_or(|r| *r == rec.resource)
            && self
                .subresource
                .as_ref()
                .is_none_or(|s| *s == rec.subresource)
            && is(&self.name, &rec.name)
            && is(&self.namespace, &rec.namespace)
            && (self.user_agent.as_ref()).is_none_or(|ua| {
                rec.user_agent
                    .as_deref()
                    .is_some_and(|sent| sent.contains(ua.as_str()))
            })
            && self.times > 0
    }
}
