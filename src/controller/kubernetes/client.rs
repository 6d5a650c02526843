//! The controller's Kubernetes client.

use kube::Client;

use super::request_limit::RequestLimitLayer;

/// The User-Agent of the controller's Kubernetes requests.
pub const USER_AGENT: &str = concat!("invite-operator/", env!("CARGO_PKG_VERSION"));

/// A Kubernetes client that identifies itself as the operator (User-Agent), so its requests
/// can be told apart in audit logs, with at most `max_requests` requests in flight at once
/// (watches and Lease requests not counted; see `request_limit`).
pub fn kube_client(mut config: kube::Config, max_requests: usize) -> Result<Client, kube::Error> {
    config.headers.push((
        http::header::USER_AGENT,
        http::HeaderValue::from_static(USER_AGENT),
    ));
    Ok(kube::client::ClientBuilder::try_from(config)?
        .with_layer(&RequestLimitLayer::new(max_requests))
        .build())
}
