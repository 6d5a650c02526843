//! Helpers shared by the mock's test files.

use invite_mock::RunningMock;
use reqwest::{Client, Response};
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

/// POSTs the API token `token` to the mock's token exchange.
pub async fn exchange(http: &Client, m: &RunningMock, token: &str) -> reqwest::Result<Response> {
    let url = format!("{}/csp/gateway/am/api/auth/api-tokens/authorize", m.url);
    http.post(url).form(&[("api_token", token)]).send().await
}

/// The access token the exchange answers for `token` (empty when it answers none).
pub async fn access_token(http: &Client, m: &RunningMock, token: &str) -> String {
    let answer = json_of(exchange(http, m, token).await).await;
    answer["access_token"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}
