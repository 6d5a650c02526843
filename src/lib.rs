//! invite-operator: turns `UserInvitation` custom resources into invitations on a
//! user-management API and writes the outcome back to the resource.

pub mod api;
pub mod cli;
pub mod controller;
pub mod endpoint_status;
pub mod invite;
pub mod leader;
pub mod oneshot;
pub mod reconcile;
pub mod telemetry;
