//! # kube-test-apiserver
//!
//! An in-process Kubernetes API server for the operator's end-to-end tests. It speaks the real
//! HTTP wire protocol, so an **unmodified** [`kube::Client`] (and kube-runtime's `Controller`,
//! `watcher`, `reflector` and `finalizer`) runs against it as against a cluster. It emulates
//! only what the operator and its test suite use; the same suite runs against a real
//! kube-apiserver (`tests/e2e-realkube.sh`, in CI), which is the check that what is emulated
//! behaves the same. See `tests/support/README.md` for what is left out and why.
//!
//! ```no_run
//! # async fn demo() {
//! use kube_test_apiserver::{Fault, TestApiServer};
//! let server = TestApiServer::start().await;
//! let client = server.client();
//! // ... create CRDs / objects through `client`, run the controller ...
//! server.inject_fault(Fault::new(409).verb("patch").resource("userinvitations").times(1));
//! let used: Vec<_> = server.requests().into_iter().map(|r| (r.verb, r.resource)).collect();
//! # let _ = used;
//! # }
//! ```
//!
//! ## Served
//!
//! * Resources: core `v1` `namespaces` (`default`, `kube-system`, `kube-public`,
//!   `kube-node-lease` exist) and `secrets`; `events.k8s.io/v1` `events`;
//!   `coordination.k8s.io/v1` `leases`; `apiextensions.k8s.io/v1` `customresourcedefinitions`,
//!   whose custom resources are served as soon as they are created (`Established`). `/version`.
//!   Anything else answers `404`; unsupported verbs `405`.
//! * Verbs: get, list (`limit`/`continue`), watch, create, update (PUT; creates missing Leases
//!   and Events like the real registries), patch (JSON patch, JSON merge patch), delete.
//! * One global, monotonically increasing `resourceVersion`; `uid`, `creationTimestamp`;
//!   `metadata.generation` for custom resources (bumped by changes outside metadata and status,
//!   and by graceful deletion). No-op writes change nothing and send no watch event.
//! * The status subresource, isolated in both directions; optimistic concurrency (PUT and
//!   patches carrying `metadata.resourceVersion`); JSON patch `test` with
//!   kube-apiserver's answers (a `test` of a missing path compares with `null`; a failed
//!   operation is `422 Invalid` with the generic message and no causes).
//! * Finalizers: deletion sets `deletionTimestamp`, removing the last finalizer deletes, none
//!   can be added while deleting. Namespace deletion: `Terminating`, content deleted, creates
//!   refused, gone once empty (at once: the namespace controller's work). Creating in a missing
//!   namespace answers `404`. Secrets' `stringData` is folded into `data`.
//! * Label selectors of `key=value` requirements for lists and watches (objects starting or
//!   stopping to match are `ADDED` / `DELETED`); other requirements answer `400`.
//! * Watches from a resourceVersion (history replay; `410 Expired` once compacted), from
//!   `""`/`"0"` (synthetic `ADDED`), with bookmarks (every second by default) and
//!   `timeoutSeconds`.
//!
//! Test-only facilities: fault injection ([`Fault`]), request records
//! ([`TestApiServer::requests`]), [`TestApiServer::close_watches`] and
//! [`TestApiServer::compact_history`]; tests using them are skipped against a real cluster.

#![deny(missing_docs)]

mod errors;
mod http;
mod resources;
mod selectors;
mod store;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;

/// One request served by the [`TestApiServer`], as seen by an RBAC authorizer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    /// The RBAC verb: `get`, `list`, `watch`, `create`, `update`, `patch`,
    /// `delete` or `deletecollection` (`get` for non-resource URLs).
    pub verb: String,
    /// The API group (`""` for the core group).
    pub api_group: String,
    /// The resource plural (`""` for non-resource URLs such as `/version`).
    pub resource: String,
    /// The subresource (`status`, …), if any.
    pub subresource: Option<String>,
    /// The namespace of the request, if namespaced.
    pub namespace: Option<String>,
    /// The object name, if the request targets one object.
    pub name: Option<String>,
    /// The HTTP status code of the response.
    pub status: u16,
    /// The `User-Agent` header, if sent.
    pub user_agent: Option<String>,
    /// The request path (without query).
    pub path: String,
}

/// A fault to inject: matching requests are answered with an error `Status`
/// (and nothing is changed) `times` times.
///
/// Unset matchers match everything. `subresource: Some(None)` matches only
/// requests on the main resource.
///
/// ```
/// use kube_test_apiserver::Fault;
/// let f = Fault::new(409).verb("patch").resource("userinvitations").times(1);
/// assert_eq!(f.status, 409);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fault {
    /// RBAC verb to match (`get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, …).
    pub verb: Option<String>,
    /// Resource plural to match.
    pub resource: Option<String>,
    /// Subresource to match (`Some(None)`: main resource only).
    pub subresource: Option<Option<String>>,
    /// Object name to match.
    pub name: Option<String>,
    /// Namespace to match.
    pub namespace: Option<String>,
    /// Substring of the `User-Agent` header to match (e.g. to fail one client's requests
    /// only; requests without the header do not match).
    pub user_agent: Option<String>,
    /// HTTP status to answer (409, 500, 503, 429, …).
    pub status: u16,
    /// How many matching requests fail (then the fault is removed).
    pub times: usize,
    /// Optional `Retry-After` header value in seconds (the real server sends
    /// `1` with 429s; note kube's client retries 429/503/504 honouring it).
    pub retry_after: Option<u64>,
}

/// Builder methods `field(value)` setting `Some(value.into())`.
macro_rules! string_setters {
    ($($(#[$doc:meta])* $field:ident,)*) => {
        $(
            $(#[$doc])*
            pub fn $field(mut self, $field: impl Into<String>) -> Self {
                self.$field = Some($field.into());
                self
            }
        )*
    };
}

impl Fault {
    /// A fault answering `status` once for any request.
    pub fn new(status: u16) -> Self {
        Fault {
            status,
            times: 1,
            ..Fault::default()
        }
    }

    string_setters! {
        /// Only match this RBAC verb.
        verb,
        /// Only match this resource (plural).
        resource,
        /// Only match this object name.
        name,
        /// Only match this namespace.
        namespace,
        /// Only match requests whose `User-Agent` contains this string.
        user_agent,
    }

    /// Only match this subresource (`None`: only the main resource).
    pub fn subresource(mut self, subresource: Option<&str>) -> Self {
        self.subresource = Some(subresource.map(String::from));
        self
    }

    /// Fail this many matching requests (default 1; `0` never matches,
    /// `usize::MAX` is effectively "always").
    pub fn times(mut self, times: usize) -> Self {
        self.times = times;
        self
    }

    /// Send a `Retry-After` header.
    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }
}

struct Handle {
    shared: Arc<http::Shared>,
    shutdown: Mutex<Option<oneshot::Sender<()>>>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Handle {
    fn stop(&self) {
        // End the watch streams first so graceful shutdown does not wait on them.
        self.shared.lock().watchers.clear();
        if let Some(tx) = self
            .shutdown
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            let _ = tx.send(());
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.stop();
    }
}

/// An in-process Kubernetes API server. Cheap to clone (clones share the
/// server); the server stops when the last clone is dropped or on
/// [`shutdown`](Self::shutdown).
#[derive(Clone)]
pub struct TestApiServer {
    inner: Arc<Handle>,
}

impl std::fmt::Debug for TestApiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestApiServer")
            .field("url", &self.url())
            .finish()
    }
}

impl TestApiServer {
    /// Starts a server on `127.0.0.1` with an ephemeral port, served from a
    /// tokio task on the current runtime.
    pub async fn start() -> TestApiServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr: SocketAddr = listener.local_addr().expect("local addr");
        let shared = Arc::new(http::Shared {
            store: Mutex::new(store::Store::new()),
            addr,
            bookmark_interval: Mutex::new(Duration::from_secs(1)),
        });
        let app = axum::Router::new()
            .fallback(http::handle)
            .with_state(shared.clone());
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
        TestApiServer {
            inner: Arc::new(Handle {
                shared,
                shutdown: Mutex::new(Some(tx)),
                task: Mutex::new(Some(task)),
            }),
        }
    }

    /// The base URL, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        format!("http://{}", self.inner.shared.addr)
    }

    /// A [`kube::Config`] for this server (plain HTTP, default namespace
    /// `default`), e.g. to build several clients.
    pub fn config(&self) -> kube::Config {
        let uri: http_uri::Uri = self.url().parse().expect("valid url");
        let mut c = kube::Config::new(uri);
        c.default_namespace = "default".into();
        c
    }

    /// A [`kube::Client`] for this server.
    pub fn client(&self) -> kube::Client {
        kube::Client::try_from(self.config()).expect("client from config")
    }

    /// Every request served so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.inner.shared.lock().requests.clone()
    }

    /// Adds a fault; see [`Fault`]. Faults are checked in insertion order.
    pub fn inject_fault(&self, fault: Fault) {
        self.inner.shared.lock().faults.push(fault);
    }

    /// Removes all pending faults.
    pub fn clear_faults(&self) {
        self.inner.shared.lock().faults.clear();
    }

    /// Ends every open watch stream (clients must re-watch, typically from
    /// their last seen resourceVersion).
    pub fn close_watches(&self) {
        self.inner.shared.lock().watchers.clear();
    }

    /// The number of currently open watch streams.
    pub fn open_watches(&self) -> usize {
        self.inner.shared.lock().watchers.len()
    }

    /// Discards the watch history, like an etcd compaction: watches resuming
    /// from an older resourceVersion get a `410 Expired` ERROR event, and
    /// older `continue` tokens are rejected with `410`.
    pub fn compact_history(&self) {
        self.inner.shared.lock().compact();
    }

    /// Sets how often watches with `allowWatchBookmarks` get a BOOKMARK
    /// (default 1s; applies to watches started afterwards).
    pub fn set_bookmark_interval(&self, interval: Duration) {
        *self
            .inner
            .shared
            .bookmark_interval
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = interval.max(Duration::from_millis(10));
    }

    /// Stops the server: ends the watches and waits (briefly) for the
    /// serving task to finish.
    pub async fn shutdown(self) {
        self.inner.stop();
        let task = self
            .inner
            .task
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(task) = task {
            let abort = task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(2), task)
                .await
                .is_err()
            {
                tracing::debug!("test apiserver did not stop within 2s; aborting");
                abort.abort();
            }
        }
    }
}

/// Creates `object`, or replaces the object of that name with it (carrying the current
/// `resourceVersion`, retried on a conflict): test set-up that works the same on this server
/// and on a real one, without server-side apply.
pub async fn create_or_replace<K>(api: &kube::Api<K>, object: &K) -> kube::Result<K>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::Serialize + serde::de::DeserializeOwned,
{
    let name = object.meta().name.clone().unwrap_or_default();
    let params = kube::api::PostParams::default();
    let mut attempts = 0;
    loop {
        attempts += 1;
        let retry = |e: &kube::Error| {
            attempts < 20 && matches!(e, kube::Error::Api(s) if s.code == 404 || s.code == 409)
        };
        match api.create(&params, object).await {
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            created => return created,
        }
        let mut next = object.clone();
        match api.get(&name).await {
            Ok(current) => {
                next.meta_mut().resource_version = current.meta().resource_version.clone()
            }
            Err(e) if retry(&e) => continue,
            Err(e) => return Err(e),
        }
        match api.replace(&name, &params, &next).await {
            Err(e) if retry(&e) => continue,
            replaced => return replaced,
        }
    }
}

mod http_uri {
    pub use axum::http::Uri;
}
