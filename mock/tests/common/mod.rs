//! Helpers shared by the mock's test files.

use invite_mock::RunningMock;
use reqwest::Client;
use serde_json::Value;

/// The JSON the mock's control endpoint `/mock/<path>` answers to a GET.
pub async fn control(m: &RunningMock, path: &str) -> Value {
    json_of(
        Client::new()
            .get(format!("{}/mock/{path}", m.url))
            .send()
            .await,
    )
    .await
}

/// The JSON body of an answer.
pub async fn json_of(answer: reqwest::Result<reqwest::Response>) -> Value {
    answer.expect("answer").json().await.expect("JSON")
}
