//! The HTTP server: one hyper HTTP/1 connection per client, so that a fault can drop the
//! connection without an answer (`reset`) or hold a request until the client gives up
//! (`timeout`), which a plain `axum::serve` cannot.

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::response::Response;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::ServiceExt;

/// How the mock answers one API request.
pub(crate) enum Reply {
    /// An HTTP answer.
    Answer(Response),
    /// No answer at all, until the client disconnects or the mock stops.
    Hold,
    /// Close the connection without an answer.
    Reset,
}

impl Reply {
    /// The axum response carrying this reply to the connection.
    pub async fn into_response(self) -> Response {
        match self {
            Reply::Answer(r) => r,
            Reply::Hold => std::future::pending().await,
            Reply::Reset => {
                let mut r = Response::new(Body::empty());
                r.extensions_mut().insert(DropConnection);
                r
            }
        }
    }
}

/// Marks a response that must not be sent: its connection is closed instead.
#[derive(Debug, Clone, Copy)]
struct DropConnection;

impl std::fmt::Display for DropConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by the mock (reset fault)")
    }
}

impl std::error::Error for DropConnection {}

/// Serves `router` on `listener` until `shutdown` completes; then every open connection is
/// closed (held requests included).
pub(crate) async fn serve(
    router: Router,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (closing, _) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: wait, as axum::serve does.
                    tracing::warn!(error = %e, "mock: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let mut closed = closing.subscribe();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                let router = router.clone();
                async move {
                    let resp = router
                        .oneshot(req.map(Body::new))
                        .await
                        .unwrap_or_else(|e: Infallible| match e {});
                    if resp.extensions().get::<DropConnection>().is_some() {
                        Err(DropConnection)
                    } else {
                        Ok(resp)
                    }
                }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = conn => {}
                _ = closed.wait_for(|c| *c) => {}
            }
        });
    }
    closing.send_replace(true);
    Ok(())
}
