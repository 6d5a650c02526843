//! The e2e suite, one test binary (linking kube, tokio, axum and reqwest once): the real
//! controller against a Kubernetes API — the in-process test server by default, a real
//! kube-apiserver when `INVITE_OPERATOR_E2E_KUBECONFIG` names a kubeconfig (see
//! `tests/e2e-realkube.sh`) — and the mock invite API. One module per area; the shared harness,
//! waits and specs are in [`common`].
//!
//! Run one area with a filter: `cargo test --test e2e tenancy::` (a test by its name:
//! `cargo test --test e2e tenancy::two_operators_with_disjoint_endpoint_selectors`).
//! `leftovers::` is ignored by default: `tests/e2e-realkube.sh` runs it last, with `--ignored`.

mod common;

mod admission;
mod bad_input;
mod coalescing;
mod conflicts;
mod crds;
mod endpoints;
mod exactly_once;
mod faults;
mod health;
mod holes;
mod journal;
mod leader;
mod leftovers;
mod lifecycle;
mod metrics;
mod no_token;
mod orginvitation;
mod rbac;
mod telemetry;
mod tenancy;
mod unsettled;
mod userinvite;
