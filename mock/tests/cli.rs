//! The `invite-mock` binary as a person runs it from the README.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

#[tokio::test]
async fn the_binary_serves_both_apis_with_the_given_token() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_invite-mock"))
        .args(["--listen", "127.0.0.1:0", "--latency", "0ms", "--seed", "3"])
        .env("MOCK_API_TOKEN", "cli-token")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("invite-mock starts");
    let stderr = child.stderr.take().expect("stderr");
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stderr).read_line(&mut line).map(|_| line)
    })
    .await
    .expect("reader")
    .expect("a line on stderr");
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no URL in {line:?}"))
        .to_string();
    let http = reqwest::Client::new();
    let list_users = |token: &str| {
        http.get(format!("{url}/api/v2/user"))
            .bearer_auth(token)
            .send()
    };
    let users = list_users("cli-token").await.expect("request");
    let refused = list_users("mock-token").await.expect("request");
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(users.status().as_u16(), 200);
    assert_eq!(refused.status().as_u16(), 401);
}

#[test]
fn an_invalid_fault_rate_is_refused() {
    let out = Command::new(env!("CARGO_BIN_EXE_invite-mock"))
        .args(["--listen", "127.0.0.1:0", "--fault-rate", "2"])
        .output()
        .expect("invite-mock runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--fault-rate"));
}
