//! invite-operator: turns `UserInvitation` custom resources into invitations on a
//! user-management API and writes the outcome back to the resource.
//!
//! | module | concern |
//! |---|---|
//! | [`api`] | the custom resource types (CRDs are generated from them) |
//! | [`invite`] | the invite APIs: one trait, one module per flavour, transport, coalescing |
//! | [`reconcile`] | the pure planner, endpoint checks, and the pass that executes a plan |
//! | [`controller`] | the Kubernetes side: watches, reconcilers, status, events |
//! | [`leader`] | leader election on a Lease |
//! | [`health`] | `/healthz`, `/readyz`, `/metrics` |
//! | [`telemetry`] | logging and metrics |
//! | `oneshot` | the `reconcile -f` mode, without a cluster |
//! | [`cli`] | the command line |

pub mod api;
pub mod cli;
pub mod controller;
pub mod health;
pub mod invite;
pub mod leader;
mod oneshot;
pub mod reconcile;
pub mod telemetry;
