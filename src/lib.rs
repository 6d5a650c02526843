//! invite-operator: turns `UserInvitation` custom resources into invitations on a
//! user-management API and writes the outcome back to the resource.

pub mod mock;
