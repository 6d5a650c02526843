//! What can go wrong in one reconcile, and how the controller names a resource.

use kube::ResourceExt;

use super::kubernetes::writes::is_guard_failure;
use crate::{
    api::UserInvitation,
    invite::{ApiError, ErrorCategory},
    reconcile::{WriteError, plan::Blocked},
};

/// Errors of one reconcile: of a UserInvitation, or of an endpoint's status (only `Kube` and
/// `Write`: checking an endpoint reports what it finds in the status).
#[derive(thiserror::Error, Debug)]
pub enum ReconcileError {
    /// A Kubernetes call failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// Writing the status failed.
    #[error(transparent)]
    Write(#[from] WriteError),
    /// The invite API failed (the status says so where it matters).
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The resource cannot be worked on until something changes.
    #[error("{}", .0.message)]
    Blocked(Blocked),
}

impl ReconcileError {
    /// What to do about it.
    pub fn category(&self) -> ErrorCategory {
        match self {
            ReconcileError::Api(e) => e.category(),
            ReconcileError::Kube(_) | ReconcileError::Write(_) => ErrorCategory::Transient,
            ReconcileError::Blocked(_) => ErrorCategory::Configuration,
        }
    }

    /// Whether a guarded write lost a race with another change of the resource (no failure:
    /// its new version is reconciled instead).
    pub fn is_conflict(&self) -> bool {
        match self {
            ReconcileError::Write(WriteError::Conflict) => true,
            ReconcileError::Kube(e) => is_guard_failure(e),
            _ => false,
        }
    }

    /// The result label of the reconcile metric.
    pub fn label(&self) -> &'static str {
        match self.category() {
            ErrorCategory::Transient => "transient",
            ErrorCategory::Configuration => "configuration",
            ErrorCategory::Permanent => "permanent",
        }
    }
}

/// The `namespace/name` of a resource: how the controller's memory and indexes name it.
pub fn resource_key(invitation: &UserInvitation) -> String {
    format!(
        "{}/{}",
        invitation.namespace().unwrap_or_default(),
        invitation.name_any()
    )
}
