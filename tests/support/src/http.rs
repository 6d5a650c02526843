//! The HTTP layer: routing, request recording, fault injection, discovery,
//! CRUD/patch/list/watch handlers.

use crate::errors::{ApiError, FieldErr, FieldErrKind};
use crate::resources::ResourceDef;
use crate::selectors::{FieldSelector, LabelSelector};
use crate::ssa::{self, Types};
use crate::store::{self, Ctx, Manage, Store, Watcher};
use crate::{Fault, RecordedRequest};
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
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

#[derive(Debug, Default, Clone)]
struct Target {
    group: String,
    version: String,
    plural: String,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
    watch_prefix: bool,
}

enum Route {
    Version,
    Health,
    Api,
    CoreVersion(String),
    Apis,
    Group(String),
    GroupVersion(String, String),
    Resource(Target),
    NotFound,
}

fn decode(seg: &str) -> String {
    let mut out = Vec::new();
    let b = seg.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&seg[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_route(path: &str) -> Route {
    let segs: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(decode)
        .collect();
    let s: Vec<&str> = segs.iter().map(|s| s.as_str()).collect();
    match s.as_slice() {
        ["version"] => Route::Version,
        ["healthz"] | ["readyz"] | ["livez"] => Route::Health,
        ["api"] => Route::Api,
        ["api", v] => Route::CoreVersion(v.to_string()),
        ["api", v, rest @ ..] => parse_rest("", v, rest),
        ["apis"] => Route::Apis,
        ["apis", g] => Route::Group(g.to_string()),
        ["apis", g, v] => Route::GroupVersion(g.to_string(), v.to_string()),
        ["apis", g, v, rest @ ..] => parse_rest(g, v, rest),
        _ => Route::NotFound,
    }
}

fn parse_rest(group: &str, version: &str, rest: &[&str]) -> Route {
    let mut t = Target {
        group: group.into(),
        version: version.into(),
        ..Default::default()
    };
    let mut rest = rest;
    if rest.first() == Some(&"watch") {
        t.watch_prefix = true;
        rest = &rest[1..];
    }
    let ns_sub = rest.len() == 3 && group.is_empty() && matches!(rest[2], "status" | "finalize");
    if rest.first() == Some(&"namespaces") && rest.len() >= 3 && !ns_sub {
        t.namespace = Some(rest[1].to_string());
        rest = &rest[2..];
    }
    match rest {
        [plural] => t.plural = plural.to_string(),
        [plural, name] => {
            t.plural = plural.to_string();
            t.name = Some(name.to_string());
        }
        [plural, name, sub] => {
            t.plural = plural.to_string();
            t.name = Some(name.to_string());
            t.subresource = Some(sub.to_string());
        }
        _ => return Route::NotFound,
    }
    Route::Resource(t)
}

fn json_response(code: u16, v: &Value) -> Response {
    let mut r = Response::new(Body::from(serde_json::to_vec(v).unwrap_or_default()));
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn error_response(e: &ApiError) -> Response {
    let mut r = json_response(e.code, &e.to_status());
    if let Some(s) = e.retry_after
        && let Ok(v) = HeaderValue::from_str(&s.to_string())
    {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

fn rbac_verb(method: &Method, t: &Target, watch: bool) -> &'static str {
    match *method {
        Method::GET | Method::HEAD => {
            if watch {
                "watch"
            } else if t.name.is_some() {
                "get"
            } else {
                "list"
            }
        }
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => {
            if t.name.is_some() {
                "delete"
            } else {
                "deletecollection"
            }
        }
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
            .collect();
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let route = parse_route(uri.path());
    let watch = matches!(
        query.get("watch").map(|s| s.as_str()),
        Some("true") | Some("1")
    );
    let mut rec = RecordedRequest {
        verb: "get".into(),
        api_group: String::new(),
        resource: String::new(),
        subresource: None,
        namespace: None,
        name: None,
        field_manager: query.get("fieldManager").cloned(),
        status: 200,
        user_agent: user_agent.clone(),
        path: uri.path().to_string(),
    };
    let resp = match route {
        Route::Resource(t) => {
            let watch = watch || t.watch_prefix;
            rec.verb = rbac_verb(&method, &t, watch).into();
            rec.api_group = t.group.clone();
            rec.resource = t.plural.clone();
            rec.subresource = t.subresource.clone();
            rec.namespace = t.namespace.clone();
            rec.name = t.name.clone();
            if let Some(e) = take_fault(&shared, &rec) {
                error_response(&e)
            } else {
                let req = Req {
                    method,
                    t,
                    query,
                    headers,
                    body,
                    watch,
                    user_agent,
                };
                resource_request(&shared, req)
            }
        }
        other => {
            if let Some(e) = take_fault(&shared, &rec) {
                error_response(&e)
            } else {
                non_resource(&shared, other, &headers)
            }
        }
    };
    rec.status = resp.status().as_u16();
    shared.lock().requests.push(rec);
    resp
}

fn take_fault(shared: &Shared, rec: &RecordedRequest) -> Option<ApiError> {
    let mut st = shared.lock();
    let idx = st.faults.iter().position(|f| f.matches(rec))?;
    let f = &mut st.faults[idx];
    let rref = store::res_ref(&rec.api_group, &rec.resource);
    let mut e = ApiError::for_code(f.status, &rref, rec.name.as_deref().unwrap_or_default());
    e.retry_after = f.retry_after;
    if let Some(m) = &f.message {
        e.message = m.clone();
    }
    f.times = f.times.saturating_sub(1);
    if f.times == 0 {
        st.faults.remove(idx);
    }
    Some(e)
}

fn non_resource(shared: &Shared, route: Route, headers: &HeaderMap) -> Response {
    let st = shared.lock();
    let aggregated = headers
        .get(header::ACCEPT)
        .and_then(|a| a.to_str().ok())
        .is_some_and(|a| a.contains("as=APIGroupDiscoveryList"));
    match route {
        Route::Version => json_response(
            200,
            &json!({
                "major": "1", "minor": "33", "gitVersion": "v1.33.0-kube-test-apiserver",
                "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
                "buildDate": "2025-01-01T00:00:00Z", "goVersion": "go1.24.0", "compiler": "gc",
                "platform": "linux/amd64"
            }),
        ),
        Route::Health => {
            let mut r = Response::new(Body::from("ok"));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            r
        }
        Route::Api if aggregated => {
            let mut r = json_response(200, &aggregated_list(&st, true));
            set_aggregated_ct(&mut r);
            r
        }
        Route::Api => json_response(
            200,
            &json!({
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": shared.addr.to_string()}]
            }),
        ),
        Route::CoreVersion(v) if v == "v1" => json_response(200, &resource_list(&st, "", "v1")),
        Route::Apis if aggregated => {
            let mut r = json_response(200, &aggregated_list(&st, false));
            set_aggregated_ct(&mut r);
            r
        }
        Route::Apis => {
            let groups: Vec<Value> = group_versions(&st)
                .into_iter()
                .filter(|(g, _)| !g.is_empty())
                .map(|(g, vs)| api_group(&g, &vs))
                .collect();
            json_response(
                200,
                &json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}),
            )
        }
        Route::Group(g) => match group_versions(&st).into_iter().find(|(x, _)| *x == g) {
            Some((g, vs)) => {
                let mut v = api_group(&g, &vs);
                v["kind"] = json!("APIGroup");
                v["apiVersion"] = json!("v1");
                json_response(200, &v)
            }
            None => error_response(&ApiError::no_route()),
        },
        Route::GroupVersion(g, v) => {
            if group_versions(&st)
                .iter()
                .any(|(x, vs)| *x == g && vs.contains(&v))
            {
                json_response(200, &resource_list(&st, &g, &v))
            } else {
                error_response(&ApiError::no_route())
            }
        }
        _ => error_response(&ApiError::no_route()),
    }
}

fn set_aggregated_ct(r: &mut Response) {
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList",
        ),
    );
}

/// Groups with their served versions in priority order.
fn group_versions(st: &Store) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for r in st.resources.values() {
        let entry = match out.iter_mut().position(|(g, _)| *g == r.group) {
            Some(i) => &mut out[i].1,
            None => {
                out.push((r.group.clone(), vec![]));
                &mut out.last_mut().expect("just pushed").1
            }
        };
        for v in &r.versions {
            if !entry.contains(&v.name) {
                entry.push(v.name.clone());
            }
        }
    }
    for (_, vs) in out.iter_mut() {
        vs.sort_by_key(|v| crate::resources::version_priority(v));
    }
    out
}

fn api_group(g: &str, vs: &[String]) -> Value {
    let versions: Vec<Value> = vs
        .iter()
        .map(|v| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
        .collect();
    json!({"name": g, "versions": versions, "preferredVersion": versions[0]})
}

fn resource_list(st: &Store, group: &str, version: &str) -> Value {
    let mut resources = Vec::new();
    for r in st
        .resources
        .values()
        .filter(|r| r.group == group && r.version(version).is_some())
    {
        resources.extend(r.discovery_entries(version));
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources})
}

fn aggregated_list(st: &Store, core: bool) -> Value {
    let items: Vec<Value> = group_versions(st)
        .into_iter()
        .filter(|(g, _)| g.is_empty() == core)
        .map(|(g, vs)| {
            let versions: Vec<Value> = vs
                .iter()
                .map(|v| {
                    let res: Vec<Value> = st
                        .resources
                        .values()
                        .filter(|r| r.group == g && r.version(v).is_some())
                        .map(|r| r.aggregated_entry(v))
                        .collect();
                    json!({"version": v, "resources": res, "freshness": "Current"})
                })
                .collect();
            json!({"metadata": {"name": g, "creationTimestamp": null}, "versions": versions})
        })
        .collect();
    json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items})
}

struct Req {
    method: Method,
    t: Target,
    query: HashMap<String, String>,
    headers: HeaderMap,
    body: Bytes,
    watch: bool,
    user_agent: Option<String>,
}

impl Req {
    fn q(&self, k: &str) -> Option<&str> {
        self.query
            .get(k)
            .map(|s| s.as_str())
            .filter(|s| !s.is_empty())
    }
    fn meta_only(&self) -> bool {
        self.headers
            .get(header::ACCEPT)
            .and_then(|a| a.to_str().ok())
            .is_some_and(|a| a.contains("as=PartialObjectMetadata"))
    }
    fn content_type(&self) -> String {
        self.headers
            .get(header::CONTENT_TYPE)
            .and_then(|a| a.to_str().ok())
            .unwrap_or("application/json")
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_string()
    }
    /// The manager for non-apply writes: `fieldManager` or the user agent prefix.
    fn manager(&self) -> String {
        self.q("fieldManager").map(String::from).unwrap_or_else(|| {
            self.user_agent
                .as_deref()
                .and_then(|u| u.split('/').next())
                .filter(|s| !s.is_empty())
                .unwrap_or("unknown")
                .to_string()
        })
    }
}

fn parse_json(body: &[u8], kind: &str) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!(
            "{kind} in version \"v1\" cannot be handled as a {kind}: json: cannot unmarshal: {e}"
        ))
    })
}

fn resource_request(shared: &Arc<Shared>, req: Req) -> Response {
    let res = {
        let st = shared.lock();
        st.find_resource(&req.t.group, &req.t.version, &req.t.plural)
            .cloned()
    };
    let Some(res) = res else {
        return error_response(&ApiError::no_route());
    };
    let t = &req.t;
    if t.namespace.is_some() && !res.namespaced {
        return error_response(&ApiError::no_route());
    }
    if let Some(sub) = &t.subresource
        && !res.supports_subresource(&t.version, sub)
    {
        return error_response(&ApiError::no_route());
    }
    if let Some(fm) = req.q("fieldManager")
        && (fm.len() > 128 || fm.chars().any(|c| c.is_control()))
    {
        return error_response(&ApiError::invalid(
            &crate::errors::ResRef {
                group: "meta.k8s.io".into(),
                plural: "patchoptions".into(),
                kind: "PatchOptions".into(),
            },
            "",
            &[FieldErr::invalid(
                "fieldManager",
                json!(fm),
                "must be at most 128 printable characters",
            )],
        ));
    }
    let ctx = Ctx {
        res: res.clone(),
        version: t.version.clone(),
        namespace: if res.namespaced {
            t.namespace.clone()
        } else {
            None
        },
        subresource: t.subresource.clone(),
        dry_run: req.q("dryRun") == Some("All"),
        strict: req.q("fieldValidation") == Some("Strict"),
    };
    let result = match (&req.method, &t.name) {
        (&Method::GET, None) if req.watch => return watch(shared, &req, &ctx),
        (&Method::GET, None) => list(shared, &req, &ctx),
        (&Method::GET, Some(name)) => {
            let st = shared.lock();
            st.get_or_404(&ctx, name)
                .map(|o| (200, Store::render(&res, &o, &t.version, req.meta_only())))
        }
        (&Method::POST, None) if t.subresource.is_none() => create(shared, &req, &ctx),
        (&Method::PUT, Some(name)) => replace(shared, &req, &ctx, name),
        (&Method::PATCH, Some(name)) => patch(shared, &req, &ctx, name),
        (&Method::DELETE, Some(name)) if t.subresource.is_none() => {
            let opts = if req.body.is_empty() {
                json!({})
            } else {
                match parse_json(&req.body, "DeleteOptions") {
                    Ok(v) => v,
                    Err(e) => return error_response(&e),
                }
            };
            let mut st = shared.lock();
            st.delete(&ctx, name, &opts)
                .map(|o| (200, Store::render(&res, &o, &t.version, req.meta_only())))
        }
        (&Method::DELETE, None) => delete_collection(shared, &req, &ctx),
        _ => Err(ApiError::method_not_allowed(
            "the server does not allow this method on the requested resource",
        )),
    };
    match result {
        Ok((code, v)) => json_response(code, &v),
        Err(e) => error_response(&e),
    }
}

fn create(shared: &Shared, req: &Req, ctx: &Ctx) -> Result<(u16, Value), ApiError> {
    let body = parse_json(&req.body, &ctx.res.kind)?;
    let mut st = shared.lock();
    let o = st.create(ctx, body, Manage::Update(req.manager()))?;
    Ok((
        201,
        Store::render(&ctx.res, &o, &ctx.version, req.meta_only()),
    ))
}

fn replace(shared: &Shared, req: &Req, ctx: &Ctx, name: &str) -> Result<(u16, Value), ApiError> {
    let body = parse_json(&req.body, &ctx.res.kind)?;
    let mut st = shared.lock();
    let existed = st
        .get(&ctx.res, ctx.namespace.as_deref().unwrap_or_default(), name)
        .is_some();
    let o = st.update(ctx, name, body, Manage::Update(req.manager()))?;
    let code = if existed { 200 } else { 201 };
    Ok((
        code,
        Store::render(&ctx.res, &o, &ctx.version, req.meta_only()),
    ))
}

fn patch(shared: &Shared, req: &Req, ctx: &Ctx, name: &str) -> Result<(u16, Value), ApiError> {
    let ct = req.content_type();
    let res = &ctx.res;
    let accepted = if res.custom {
        "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"
    } else {
        "application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json, application/apply-patch+yaml"
    };
    match ct.as_str() {
        "application/json-patch+json"
        | "application/merge-patch+json"
        | "application/apply-patch+yaml" => {}
        "application/strategic-merge-patch+json" if !res.custom => {}
        _ => return Err(ApiError::unsupported_patch(accepted)),
    }
    if ct == "application/apply-patch+yaml" {
        return apply(shared, req, ctx, name);
    }
    let mut st = shared.lock();
    let current = st.get_or_404(ctx, name)?;
    let mut doc = Store::render(res, &current, &ctx.version, false);
    match ct.as_str() {
        "application/json-patch+json" => {
            let p: json_patch::Patch = serde_json::from_slice(&req.body)
                .map_err(|e| ApiError::bad_request(e.to_string()))?;
            // The apiserver's JSON patch library treats `test` against a
            // missing path as comparing with null.
            let ops: Vec<json_patch::PatchOperation> =
                p.0.into_iter()
                    .filter(|op| match op {
                        json_patch::PatchOperation::Test(t) => {
                            !(t.value.is_null() && doc.pointer(t.path.as_str()).is_none())
                        }
                        _ => true,
                    })
                    .collect();
            // Any failed operation (a `test` that does not hold, a missing path) is answered
            // as the apiserver does (`NewGenericServerResponse(422, ...)`): `Invalid`, the
            // generic message, empty details; the reason is not disclosed.
            json_patch::patch(&mut doc, &ops).map_err(|_| ApiError::json_patch_failed())?;
        }
        "application/merge-patch+json" => {
            let p: Value = serde_json::from_slice(&req.body)
                .map_err(|e| ApiError::bad_request(e.to_string()))?;
            json_patch::merge(&mut doc, &p);
        }
        _ => {
            let p: Value = serde_json::from_slice(&req.body)
                .map_err(|e| ApiError::bad_request(e.to_string()))?;
            strategic_merge(&mut doc, &p, "");
        }
    }
    if !doc.is_object() {
        return Err(ApiError::bad_request(
            "the patched object is not a JSON object",
        ));
    }
    let o = st.update(ctx, name, doc, Manage::Update(req.manager()))?;
    Ok((200, Store::render(res, &o, &ctx.version, req.meta_only())))
}

/// A minimal strategic merge patch: JSON merge semantics, except that
/// `metadata.finalizers` is merged as a set and patch directives are honoured
/// or dropped.
fn strategic_merge(target: &mut Value, patch: &Value, path: &str) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if p.get("$patch").and_then(|v| v.as_str()) == Some("replace") {
        let mut p = p.clone();
        p.remove("$patch");
        *target = Value::Object(p);
        return;
    }
    if !target.is_object() {
        *target = json!({});
    }
    let t = target.as_object_mut().expect("object");
    for (k, v) in p {
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(arr)), Value::Array(del)) = (t.get_mut(field), v) {
                arr.retain(|x| !del.contains(x));
            }
            continue;
        }
        if k.starts_with('$') {
            continue;
        }
        let child_path = format!("{path}/{k}");
        if v.is_null() {
            t.remove(k);
        } else if child_path == "/metadata/finalizers"
            && let (Some(Value::Array(arr)), Value::Array(add)) = (t.get_mut(k), v)
        {
            for x in add {
                if !arr.contains(x) {
                    arr.push(x.clone());
                }
            }
        } else if v.is_object() {
            if v.get("$patch").and_then(|x| x.as_str()) == Some("delete") {
                t.remove(k);
            } else {
                let entry = t.entry(k.clone()).or_insert(json!({}));
                strategic_merge(entry, v, &child_path);
            }
        } else {
            t.insert(k.clone(), v.clone());
        }
    }
}

fn apply(shared: &Shared, req: &Req, ctx: &Ctx, name: &str) -> Result<(u16, Value), ApiError> {
    let res = &ctx.res;
    let Some(manager) = req.q("fieldManager").map(String::from) else {
        return Err(ApiError::invalid(
            &crate::errors::ResRef {
                group: "meta.k8s.io".into(),
                plural: "patchoptions".into(),
                kind: "PatchOptions".into(),
            },
            "",
            &[FieldErr::required(
                "fieldManager",
                "is required for apply patch",
            )],
        ));
    };
    let force = matches!(req.q("force"), Some("true") | Some("1"));
    let applied: Value = match serde_json::from_slice(&req.body) {
        Ok(v) => v,
        Err(_) => serde_saphyr::from_slice(&req.body)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?,
    };
    if !applied.is_object() || applied.get("metadata").is_some_and(|m| !m.is_object()) {
        return Err(ApiError::bad_request(
            "apply patch must be an object with object metadata",
        ));
    }
    for f in ["apiVersion", "kind"] {
        if applied
            .get(f)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .is_empty()
        {
            return Err(ApiError::bad_request(format!(
                "invalid object type: {f} must be set in an apply patch"
            )));
        }
    }
    if let Some(n) = applied.pointer("/metadata/name").and_then(|n| n.as_str())
        && !n.is_empty()
        && n != name
    {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({n}) does not match the name on the URL ({name})"
        )));
    }
    let mut st = shared.lock();
    let ns = ctx.namespace.clone().unwrap_or_default();
    let current = st.get(res, &ns, name).cloned();
    let schema = res.version(&ctx.version).and_then(|v| v.schema.clone());
    let types = Types {
        schema: schema.as_ref(),
    };
    let api_version = res.api_version(&ctx.version);
    let ts = store::now();
    let scope = ctx.scope();
    if current.is_none() && ctx.subresource.is_some() {
        return Err(ApiError::not_found(&res.res_ref(), name));
    }
    let merged = ssa::apply(
        current.as_ref(),
        &applied,
        &manager,
        force,
        ctx.subresource.as_deref(),
        &api_version,
        &ts,
        types,
        if current.is_none() {
            ssa::Scope::All
        } else {
            scope
        },
    );
    let mut merged = match merged {
        Ok(m) => m,
        Err(conflicts) => return Err(conflict_error(res, name, &conflicts)),
    };
    merged["apiVersion"] = json!(api_version);
    merged["kind"] = json!(res.kind);
    if !merged.get("metadata").is_some_and(|m| m.is_object()) {
        merged["metadata"] = json!({});
    }
    merged["metadata"]["name"] = json!(name);
    if let Some(rv) = applied
        .pointer("/metadata/resourceVersion")
        .filter(|v| v.as_str().is_some_and(|s| !s.is_empty()))
    {
        merged["metadata"]["resourceVersion"] = rv.clone();
    }
    let (code, o) = match current {
        None => (201, st.create(ctx, merged, Manage::Applied)?),
        Some(_) => (200, st.update(ctx, name, merged, Manage::Applied)?),
    };
    Ok((code, Store::render(res, &o, &ctx.version, req.meta_only())))
}

fn conflict_error(res: &ResourceDef, name: &str, conflicts: &[ssa::Conflict]) -> ApiError {
    let n = conflicts.len();
    let msg = if n == 1 {
        let c = &conflicts[0];
        format!(
            "Apply failed with 1 conflict: conflict with \"{}\" using {}: {}",
            c.manager, c.api_version, c.path
        )
    } else {
        let mut by_mgr: Vec<(String, String, Vec<String>)> = Vec::new();
        for c in conflicts {
            match by_mgr.iter_mut().find(|(m, _, _)| *m == c.manager) {
                Some(e) => e.2.push(c.path.clone()),
                None => by_mgr.push((
                    c.manager.clone(),
                    c.api_version.clone(),
                    vec![c.path.clone()],
                )),
            }
        }
        let parts: Vec<String> = by_mgr
            .iter()
            .map(|(m, av, ps)| {
                format!(
                    "conflicts with \"{m}\" using {av}:\n{}",
                    ps.iter()
                        .map(|p| format!("- {p}"))
                        .collect::<Vec<_>>()
                        .join("\n")
                )
            })
            .collect();
        format!("Apply failed with {n} conflicts: {}", parts.join("\n"))
    };
    let causes: Vec<Value> = conflicts
        .iter()
        .map(|c| {
            json!({"reason": "FieldManagerConflict", "message": format!("conflict with \"{}\" using {}", c.manager, c.api_version), "field": c.path})
        })
        .collect();
    let mut details = json!({"name": name, "kind": res.plural, "causes": causes});
    if !res.group.is_empty() {
        details["group"] = json!(res.group);
    }
    ApiError::new(409, "Conflict", msg).with_details(details)
}

#[derive(serde::Serialize, serde::Deserialize)]
struct ContinueToken {
    rv: u64,
    start: String,
}

fn selectors(req: &Req, res: &ResourceDef) -> Result<(LabelSelector, FieldSelector), ApiError> {
    let ls = LabelSelector::parse(req.q("labelSelector").unwrap_or_default())
        .map_err(ApiError::bad_request)?;
    let fs = FieldSelector::parse(
        req.q("fieldSelector").unwrap_or_default(),
        &res.field_selectors(),
    )
    .map_err(ApiError::bad_request)?;
    Ok((ls, fs))
}

fn list_envelope(
    res: &ResourceDef,
    version: &str,
    meta_only: bool,
    meta: Value,
    items: Vec<Value>,
) -> Value {
    if meta_only {
        json!({"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1", "metadata": meta, "items": items})
    } else {
        json!({"kind": res.list_kind, "apiVersion": res.api_version(version), "metadata": meta, "items": items})
    }
}

fn render_item(res: &ResourceDef, o: &Value, version: &str, meta_only: bool) -> Value {
    let mut v = Store::render(res, o, version, meta_only);
    if !meta_only
        && !res.custom
        && let Some(m) = v.as_object_mut()
    {
        // Typed lists of built-in resources omit the items' type meta.
        m.remove("apiVersion");
        m.remove("kind");
    }
    v
}

fn list(shared: &Shared, req: &Req, ctx: &Ctx) -> Result<(u16, Value), ApiError> {
    let res = &ctx.res;
    let (ls, fs) = selectors(req, res)?;
    if req.q("resourceVersionMatch").is_some() && req.q("resourceVersion").is_none() {
        return Err(ApiError::bad_request(
            "resourceVersionMatch is forbidden unless resourceVersion is provided",
        ));
    }
    let limit: usize = match req.q("limit") {
        Some(l) => l
            .parse::<i64>()
            .map_err(|_| ApiError::bad_request(format!("invalid limit {l:?}")))?
            .max(0) as usize,
        None => 0,
    };
    let st = shared.lock();
    let (list_rv, start) = match req.q("continue") {
        Some(tok) => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(tok)
                .map_err(|_| {
                    ApiError::bad_request("continue key is not valid: illegal base64 data")
                })?;
            let t: ContinueToken = serde_json::from_slice(&bytes).map_err(|_| {
                ApiError::bad_request(
                    "continue key is not valid: incorrect encoded start resourceVersion",
                )
            })?;
            if t.rv < st.compacted_rv {
                return Err(ApiError::expired(
                    "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.",
                ));
            }
            (t.rv, Some(t.start))
        }
        None => (st.rv, None),
    };
    let all: Vec<&Value> = st
        .list(res, ctx.namespace.as_deref())
        .into_iter()
        .filter(|o| ls.matches_obj(o) && fs.matches_obj(o))
        .filter(|o| start.as_ref().is_none_or(|s| obj_key(o) > *s))
        .collect();
    let mut meta = json!({"resourceVersion": list_rv.to_string()});
    let page: Vec<&Value> = if limit > 0 && all.len() > limit {
        let last = obj_key(all[limit - 1]);
        let tok = serde_json::to_vec(&ContinueToken {
            rv: list_rv,
            start: last,
        })
        .unwrap_or_default();
        meta["continue"] = json!(base64::engine::general_purpose::STANDARD.encode(tok));
        if ls.is_empty() && req.q("fieldSelector").is_none() {
            meta["remainingItemCount"] = json!(all.len() - limit);
        }
        all[..limit].to_vec()
    } else {
        all
    };
    let meta_only = req.meta_only();
    let items = page
        .into_iter()
        .map(|o| render_item(res, o, &ctx.version, meta_only))
        .collect();
    Ok((
        200,
        list_envelope(res, &ctx.version, meta_only, meta, items),
    ))
}

fn obj_key(o: &Value) -> String {
    format!(
        "{}\u{0}{}",
        o.pointer("/metadata/namespace")
            .and_then(|v| v.as_str())
            .unwrap_or_default(),
        o.pointer("/metadata/name")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
    )
}

fn delete_collection(shared: &Shared, req: &Req, ctx: &Ctx) -> Result<(u16, Value), ApiError> {
    let res = &ctx.res;
    let (ls, fs) = selectors(req, res)?;
    let opts = if req.body.is_empty() {
        json!({})
    } else {
        parse_json(&req.body, "DeleteOptions")?
    };
    let mut st = shared.lock();
    let targets: Vec<(String, String)> = st
        .list(res, ctx.namespace.as_deref())
        .into_iter()
        .filter(|o| ls.matches_obj(o) && fs.matches_obj(o))
        .map(|o| {
            (
                o.pointer("/metadata/namespace")
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_string(),
                o.pointer("/metadata/name")
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect();
    let mut items = Vec::new();
    for (ns, name) in targets {
        let mut c = ctx.clone();
        if res.namespaced {
            c.namespace = Some(ns);
        }
        let o = st.delete(&c, &name, &opts)?;
        items.push(render_item(res, &o, &ctx.version, req.meta_only()));
    }
    let meta = json!({"resourceVersion": st.rv.to_string()});
    Ok((
        200,
        list_envelope(res, &ctx.version, req.meta_only(), meta, items),
    ))
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
    interval: tokio::time::Interval,
    bookmarks: bool,
    res: ResourceDef,
    version: String,
    meta_only: bool,
    guard: WatchGuard,
}

fn watch(shared: &Arc<Shared>, req: &Req, ctx: &Ctx) -> Response {
    match start_watch(shared, req, ctx) {
        Ok(r) => r,
        Err(e) => error_response(&e),
    }
}

fn start_watch(shared: &Arc<Shared>, req: &Req, ctx: &Ctx) -> Result<Response, ApiError> {
    let res = ctx.res.clone();
    let (ls, fs) = selectors(req, &res)?;
    let timeout = match req.q("timeoutSeconds") {
        Some(t) => match t
            .parse::<u64>()
            .map_err(|_| ApiError::bad_request(format!("invalid timeoutSeconds {t:?}")))?
        {
            0 => Duration::from_secs(1800),
            n => Duration::from_secs(n),
        },
        None => Duration::from_secs(1800),
    };
    let bookmarks = matches!(req.q("allowWatchBookmarks"), Some("true") | Some("1"));
    let send_initial = matches!(req.q("sendInitialEvents"), Some("true") | Some("1"));
    if send_initial && req.q("resourceVersionMatch") != Some("NotOlderThan") {
        return Err(ApiError::invalid(
            &crate::errors::ResRef {
                group: "meta.k8s.io".into(),
                plural: "listoptions".into(),
                kind: "ListOptions".into(),
            },
            "",
            &[FieldErr::new(
                FieldErrKind::Forbidden,
                "resourceVersionMatch",
                None,
                "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
            )],
        ));
    }
    let rv_param = req.q("resourceVersion").unwrap_or_default().to_string();
    let meta_only = req.meta_only();
    let (tx, rx) = mpsc::unbounded_channel();
    let mut st = shared.lock();
    let id = st.next_watch_id;
    st.next_watch_id += 1;
    let w = Watcher {
        id,
        key: (res.group.clone(), res.plural.clone()),
        namespace: ctx.namespace.clone(),
        labels: ls,
        fields: fs,
        version: ctx.version.clone(),
        meta_only,
        tx,
    };
    let matches = |o: &Value| w.labels.matches_obj(o) && w.fields.matches_obj(o);
    let mut register = true;
    if send_initial || rv_param.is_empty() || rv_param == "0" {
        for o in st.list(&res, ctx.namespace.as_deref()) {
            if matches(o) {
                let _ = w.tx.send(store::watch_line(
                    "ADDED",
                    &Store::render(&res, o, &ctx.version, meta_only),
                ));
            }
        }
        if send_initial {
            let bm = store::bookmark(&res, &ctx.version, meta_only, st.rv, true);
            let _ = w.tx.send(store::watch_line("BOOKMARK", &bm));
        }
    } else {
        let rv: u64 = rv_param
            .parse()
            .map_err(|_| ApiError::bad_request(format!("invalid resource version: {rv_param}")))?;
        if rv < st.compacted_rv {
            let e = ApiError::expired(format!(
                "too old resource version: {rv} ({})",
                st.compacted_rv + 1
            ));
            let _ = w.tx.send(store::watch_line("ERROR", &e.to_status()));
            register = false;
        } else {
            let lines: Vec<Bytes> = st
                .history
                .iter()
                .filter(|e| e.rv > rv)
                .filter_map(|e| st.translate(&w, e))
                .map(|(typ, o)| store::watch_line(typ, &o))
                .collect();
            for l in lines {
                let _ = w.tx.send(l);
            }
        }
    }
    if register {
        st.watchers.push(w);
    }
    drop(st);
    let period = *shared
        .bookmark_interval
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let state = WatchState {
        rx,
        deadline: tokio::time::Instant::now() + timeout,
        interval: tokio::time::interval_at(tokio::time::Instant::now() + period, period),
        bookmarks,
        res,
        version: ctx.version.clone(),
        meta_only,
        guard: WatchGuard {
            shared: shared.clone(),
            id,
        },
    };
    let stream = futures::stream::unfold(state, |mut s| async move {
        tokio::select! {
            biased;
            m = s.rx.recv() => m.map(|b| (Ok::<Bytes, Infallible>(b), s)),
            _ = tokio::time::sleep_until(s.deadline) => None,
            _ = s.interval.tick(), if s.bookmarks => {
                let line = {
                    let st = s.guard.shared.lock();
                    match s.rx.try_recv() {
                        Ok(b) => b,
                        Err(_) => {
                            let bm = store::bookmark(&s.res, &s.version, s.meta_only, st.rv, false);
                            store::watch_line("BOOKMARK", &bm)
                        }
                    }
                };
                Some((Ok(line), s))
            }
        }
    });
    let mut r = Response::new(Body::from_stream(stream));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(r)
}

impl Fault {
    pub(crate) fn matches(&self, rec: &RecordedRequest) -> bool {
        self.verb.as_ref().is_none_or(|v| *v == rec.verb)
            && self.resource.as_ref().is_none_or(|r| *r == rec.resource)
            && self
                .subresource
                .as_ref()
                .is_none_or(|s| *s == rec.subresource)
            && self
                .name
                .as_ref()
                .is_none_or(|n| Some(n) == rec.name.as_ref())
            && self
                .namespace
                .as_ref()
                .is_none_or(|n| Some(n) == rec.namespace.as_ref())
            && self.user_agent.as_ref().is_none_or(|ua| {
                rec.user_agent
                    .as_deref()
                    .is_some_and(|sent| sent.contains(ua.as_str()))
            })
            && self.times > 0
    }
}
