//! Stateful mock of the invite APIs.
