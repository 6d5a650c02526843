//! A bound on the controller's Kubernetes requests in flight at once.
//!
//! The Kubernetes client speaks HTTP/1.1, so every request in flight holds a connection of its
//! own (a TLS session and its buffers). Reconciles spend most of their time waiting for the
//! invite APIs' batches, so many can run at once cheaply, but their status writes must not each
//! open a connection: the API server takes only so many writes per second anyway, and what
//! waits beyond that is better queued here than in sockets. [`RequestLimitLayer`] holds a
//! request until one of a fixed number of permits is free, and keeps the permit until the
//! response body is read. Watches (long-lived by design) and Lease requests (leader election
//! must never queue behind status writes) are never held.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use futures::future::BoxFuture;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::{Layer, Service};

/// Limits the requests in flight at once of the service it wraps (see the module docs).
#[derive(Clone, Debug)]
pub struct RequestLimitLayer {
    permits: Arc<Semaphore>,
}

impl RequestLimitLayer {
    /// At most `limit` requests (at least 1) in flight at once.
    pub fn new(limit: usize) -> RequestLimitLayer {
        RequestLimitLayer {
            permits: Arc::new(Semaphore::new(limit.max(1))),
        }
    }
}

impl<S> Layer<S> for RequestLimitLayer {
    type Service = RequestLimit<S>;

    fn layer(&self, inner: S) -> RequestLimit<S> {
        RequestLimit {
            inner,
            permits: self.permits.clone(),
        }
    }
}

/// The service of [`RequestLimitLayer`].
#[derive(Clone, Debug)]
pub struct RequestLimit<S> {
    inner: S,
    permits: Arc<Semaphore>,
}

/// Whether a request is exempt from the limit: a watch, or a Lease request.
fn is_exempt<B>(request: &Request<B>) -> bool {
    let uri = request.uri();
    let watch = uri
        .query()
        .is_some_and(|q| q.split('&').any(|pair| pair == "watch=true"));
    watch || uri.path().starts_with("/apis/coordination.k8s.io/")
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for RequestLimit<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = Response<LimitedBody<ResBody>>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let permits = (!is_exempt(&request)).then(|| self.permits.clone());
        // The client's future sends nothing until it is polled, after the permit is held.
        let response = self.inner.call(request);
        Box::pin(async move {
            let permit = match permits {
                // The semaphore is never closed.
                Some(permits) => permits.acquire_owned().await.ok(),
                None => None,
            };
            let response = response.await?;
            Ok(response.map(|inner| LimitedBody { inner, permit }))
        })
    }
}

/// A response body that holds its request's permit until it is read to the end or dropped.
#[derive(Debug)]
pub struct LimitedBody<B> {
    inner: B,
    permit: Option<OwnedSemaphorePermit>,
}

impl<B: Body + Unpin> Body for LimitedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let frame = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(None) = frame {
            self.permit = None;
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::{
        convert::Infallible,
        sync::atomic::{AtomicUsize, Ordering},
        time::Duration,
    };

    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use tower::ServiceExt;

    use super::*;

    /// A service that answers after 10 ms and records how many requests it held at once.
    #[derive(Clone, Default)]
    struct Slow {
        now: Arc<AtomicUsize>,
        most: Arc<AtomicUsize>,
    }

    impl Service<Request<()>> for Slow {
        type Response = Response<Full<Bytes>>;
        type Error = Infallible;
        type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: Request<()>) -> Self::Future {
            let (now, most) = (self.now.clone(), self.most.clone());
            Box::pin(async move {
                let at_once = now.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(at_once, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(10)).await;
                now.fetch_sub(1, Ordering::SeqCst);
                Ok(Response::new(Full::new(Bytes::from_static(b"{}"))))
            })
        }
    }

    async fn send_all(slow: &Slow, limit: usize, uris: &[String]) {
        let service = RequestLimitLayer::new(limit).layer(slow.clone());
        let calls = uris.iter().map(|uri| {
            let service = service.clone();
            let request = Request::builder().uri(uri.as_str()).body(()).unwrap();
            async move {
                let response = service.oneshot(request).await.unwrap();
                response.into_body().collect().await.unwrap();
            }
        });
        futures::future::join_all(calls).await;
    }

    #[tokio::test]
    async fn requests_beyond_the_limit_wait() {
        let slow = Slow::default();
        let uris: Vec<String> = (0..20)
            .map(|i| {
                format!(
                    "/apis/invite.operators.dev/v1alpha1/namespaces/n/userinvitations/r{i}/status"
                )
            })
            .collect();
        send_all(&slow, 3, &uris).await;
        assert_eq!(slow.most.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn watches_and_leases_are_never_held() {
        let slow = Slow::default();
        let mut uris = vec![
            "/apis/invite.operators.dev/v1alpha1/userinvitations?watch=true&resourceVersion=1"
                .to_string(),
            "/api/v1/namespaces/n/events?allowWatchBookmarks=true&watch=true".to_string(),
            "/apis/coordination.k8s.io/v1/namespaces/n/leases/invite-operator".to_string(),
        ];
        uris.push("/apis/invite.operators.dev/v1alpha1/userinvitations?limit=500".to_string());
        send_all(&slow, 1, &uris).await;
        assert_eq!(slow.most.load(Ordering::SeqCst), 4);
    }
}
