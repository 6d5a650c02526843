//! The Kubernetes side: kube-runtime controllers for UserInvitations (one shard per watched
//! namespace, or one for all) and for the endpoints' status, wired to their watches.
//!
//! | module | concern |
//! |---|---|
//! | `run.rs` | wiring: waiting for the CRD, the shards, the cluster endpoint cache, readiness |
//! | `shard.rs` | one shard: its watches, caches, holder-index feed and start gate |
//! | `context.rs` | settings and the state reconcilers share |
//! | `error.rs` | what can go wrong in a reconcile; how a resource is named |
//! | `invitation/` | the UserInvitation reconciler, its pass, and the finalizer's cleanup |
//! | `endpoints.rs` | the controller's source for resolving endpoints (caches, Secrets, clients) |
//! | `endpoint_status.rs` | the endpoint-status reconciler |
//! | `state/` | clients and Secrets, address claims, the holder index, per-resource memory |
//! | `kubernetes/` | the client, guarded status writes, finalizer patches, events |
//! | `fair_share.rs` | the share of reconcile slots one namespace or endpoint may hold |

mod context;
mod endpoint_status;
mod endpoints;
mod error;
mod fair_share;
mod invitation;
mod kubernetes;
mod run;
mod shard;
mod state;

pub use context::{CONTROLLER_NAME, Settings};
pub use invitation::cleanup::FINALIZER;
pub use kubernetes::{
    client::{USER_AGENT, kube_client},
    writes::{KubeStatusWriter, is_guard_failure},
};
pub use run::run;
