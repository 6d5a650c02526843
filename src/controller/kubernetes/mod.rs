//! The Kubernetes layer: the client, status and finalizer writes, events.

pub mod client;
pub mod events;
pub mod journal;
mod request_limit;
pub mod status_writes;
pub mod writes;
