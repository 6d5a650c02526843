//! Errors of the invite APIs, classified by what the caller should do about them.

use std::time::Duration;

/// What a caller should do about an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCategory {
    /// Try again later with backoff (5xx, 406, 429, timeouts, connection errors).
    Transient,
    /// The endpoint or its credentials are wrong (401, 403, 404 on the API root): fix the
    /// endpoint or Secret; retried slowly.
    Configuration,
    /// The API refused the request itself; retrying the same request cannot succeed.
    Permanent,
}

/// An error from an invite API call.
#[derive(thiserror::Error, Debug, Clone, PartialEq)]
pub enum ApiError {
    /// The API could not answer now.
    #[error("{operation}: the API is unavailable{}: {message}", status_text(*status))]
    Transient {
        /// The operation that failed, e.g. `invite users`.
        operation: &'static str,
        /// HTTP status, when there was a response.
        status: Option<u16>,
        /// What went wrong.
        message: String,
        /// How long the API asked us to wait (`Retry-After`).
        retry_after: Option<Duration>,
    },
    /// The API refused our credentials or the endpoint does not exist.
    #[error("{operation}: the API refused the request ({status}): {message}")]
    Configuration {
        /// The operation that failed.
        operation: &'static str,
        /// HTTP status.
        status: u16,
        /// The API's message.
        message: String,
    },
    /// The API rejected the request.
    #[error("{operation}: the API rejected the request ({status}): {message}")]
    Rejected {
        /// The operation that failed.
        operation: &'static str,
        /// HTTP status.
        status: u16,
        /// The API's message.
        message: String,
    },
    /// The request was not sent: its send deadline passed while it waited (rate limit, token
    /// exchange). Nothing reached the API.
    #[error("{operation}: not sent in time; retrying")]
    NotSent {
        /// The operation that was not sent.
        operation: &'static str,
    },
    /// The API answered something that could not be understood.
    #[error("{operation}: unexpected answer from the API: {message}")]
    Decode {
        /// The operation that failed.
        operation: &'static str,
        /// What could not be decoded.
        message: String,
    },
}

fn status_text(status: Option<u16>) -> String {
    status.map(|s| format!(" ({s})")).unwrap_or_default()
}

impl ApiError {
    /// What a caller should do about this error.
    pub fn category(&self) -> ErrorCategory {
        match self {
            ApiError::Transient { .. } | ApiError::Decode { .. } | ApiError::NotSent { .. } => {
                ErrorCategory::Transient
            }
            ApiError::Configuration { .. } => ErrorCategory::Configuration,
            ApiError::Rejected { .. } => ErrorCategory::Permanent,
        }
    }

    /// How long the API asked us to wait before retrying, if it said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ApiError::Transient { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The HTTP status of the answer, if there was one.
    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::Transient { status, .. } => *status,
            ApiError::Configuration { status, .. } | ApiError::Rejected { status, .. } => {
                Some(*status)
            }
            ApiError::Decode { .. } | ApiError::NotSent { .. } => None,
        }
    }

    /// Classifies an HTTP error answer.
    pub fn from_status(
        operation: &'static str,
        status: u16,
        message: String,
        retry_after: Option<Duration>,
    ) -> ApiError {
        match status {
            406 | 408 | 425 | 429 | 500..=599 => ApiError::Transient {
                operation,
                status: Some(status),
                message,
                retry_after,
            },
            401 | 403 => ApiError::Configuration {
                operation,
                status,
                message,
            },
            _ => ApiError::Rejected {
                operation,
                status,
                message,
            },
        }
    }
}
