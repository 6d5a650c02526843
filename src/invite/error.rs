//! Errors of the invite APIs, classified by what the caller should do about them, and by
//! whether a request that failed may still have been acted on (what exactly-once needs).

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

/// Why a request was never sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotSentReason {
    /// Its send deadline passed while it waited (rate limit, `Retry-After`, token exchange).
    Deadline,
    /// This replica no longer holds the leader lease.
    NotLeader,
    /// Its intent could not be recorded (the intent journal or the status write failed).
    NoIntent,
}

impl std::fmt::Display for NotSentReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NotSentReason::Deadline => "not sent in time; retrying",
            NotSentReason::NotLeader => "not sent: this replica no longer holds the leader lease",
            NotSentReason::NoIntent => "not sent: its intent could not be recorded; retrying",
        })
    }
}

/// An error from an invite API call.
#[derive(thiserror::Error, Debug, Clone, PartialEq)]
pub enum ApiError {
    /// The API could not take the request now, and its answer (or a failed connection)
    /// proves it did nothing: the throttling answers the APIs document (429; 406, which the
    /// UserInvite API uses for throttling; 425), or no connection.
    #[error("{operation}: the API is unavailable{}: {message}", status_text(*status))]
    Unavailable {
        /// The operation that failed, e.g. `invite users`.
        operation: &'static str,
        /// HTTP status, when there was a response.
        status: Option<u16>,
        /// What went wrong.
        message: String,
        /// How long the API asked us to wait (`Retry-After`).
        retry_after: Option<Duration>,
    },
    /// The request was sent but its outcome is unknown: the API may have acted on it (timeout,
    /// connection reset after sending, 408, and every 5xx: neither API documents that a 5xx
    /// means nothing was done).
    #[error("{operation}: no usable answer{}: {message}", status_text(*status))]
    NoAnswer {
        /// The operation that failed.
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
    /// The request was not sent; nothing reached the API.
    #[error("{operation}: {reason}")]
    NotSent {
        /// The operation that was not sent.
        operation: &'static str,
        /// Why.
        reason: NotSentReason,
    },
    /// A lookup went past one of the endpoint's budgets (members or bytes of an
    /// organization snapshot, the overall deadline): the endpoint cannot be served as it is.
    #[error("{operation}: {message}")]
    LimitExceeded {
        /// The operation that was stopped.
        operation: &'static str,
        /// Which limit, in a sentence naming the setting.
        message: String,
    },
    /// The API answered something that could not be understood (or that was too large).
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
            ApiError::Unavailable { .. }
            | ApiError::NoAnswer { .. }
            | ApiError::Decode { .. }
            | ApiError::NotSent { .. } => ErrorCategory::Transient,
            ApiError::Configuration { .. } | ApiError::LimitExceeded { .. } => {
                ErrorCategory::Configuration
            }
            ApiError::Rejected { .. } => ErrorCategory::Permanent,
        }
    }

    /// Whether a request that failed with this error may still have been acted on by the API.
    /// Only an answer that proves the API did nothing (a refusal, 429/503/406, no connection,
    /// not sent) rules it out.
    pub fn may_have_acted(&self) -> bool {
        match self {
            ApiError::NoAnswer { .. } | ApiError::Decode { .. } => true,
            ApiError::Unavailable { .. }
            | ApiError::Configuration { .. }
            | ApiError::Rejected { .. }
            | ApiError::LimitExceeded { .. }
            | ApiError::NotSent { .. } => false,
        }
    }

    /// How long the API asked us to wait before retrying, if it said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ApiError::Unavailable { retry_after, .. } | ApiError::NoAnswer { retry_after, .. } => {
                *retry_after
            }
            _ => None,
        }
    }

    /// The HTTP status of the answer, if there was one.
    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::Unavailable { status, .. } | ApiError::NoAnswer { status, .. } => *status,
            ApiError::Configuration { status, .. } | ApiError::Rejected { status, .. } => {
                Some(*status)
            }
            ApiError::Decode { .. } | ApiError::NotSent { .. } | ApiError::LimitExceeded { .. } => {
                None
            }
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
            // Documented throttling answers: the request was not processed.
            406 | 425 | 429 => ApiError::Unavailable {
                operation,
                status: Some(status),
                message,
                retry_after,
            },
            // A timeout or a gateway/server failure (503 included: a gateway may say it after
            // the backend acted): the request may have been acted on.
            408 | 500..=599 => ApiError::NoAnswer {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified_by_what_to_do_and_whether_the_api_may_have_acted() {
        use ErrorCategory::*;
        let e = |s| ApiError::from_status("op", s, String::new(), None);
        let statuses: [(&[u16], _, _); 4] = [
            (&[500, 502, 503, 504, 408], Transient, true),
            (&[429, 406], Transient, false),
            (&[401, 403], Configuration, false),
            (&[400, 409, 422], Permanent, false),
        ];
        for (statuses, category, acted) in statuses {
            for &status in statuses {
                assert_eq!(e(status).category(), category, "{status}");
                assert_eq!(e(status).may_have_acted(), acted, "{status}");
            }
        }
    }
}
