//! Fault kinds, the seeded fault mix and the `Retry-After` bookkeeping, over real HTTP.

mod common;

use std::time::Duration;

use common::{access_token, control, exchange, json_of};
use invite_mock::{
    ApiFamily, FaultKind, FaultMix, JournalEntry, MockApi, MockConfig, RunningMock, ScriptedFault,
};
use reqwest::{Client, Response, StatusCode};
use serde_json::{Value, json};

const TOKEN: &str = "mock-token";
const INVITE: &str = "/api/v2/user/invite";
const CSP: &str = "/csp/gateway/am/api";

/// A client that gives up quickly (held requests) and follows no redirect.
fn client() -> Client {
    Client::builder()
        .timeout(Duration::from_millis(300))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

async fn start() -> RunningMock {
    MockApi::start(MockConfig::default()).await.expect("mock")
}

async fn invite(m: &RunningMock, email: &str) -> reqwest::Result<Response> {
    client()
        .post(format!("{}{INVITE}", m.url))
        .bearer_auth(TOKEN)
        .json(&json!([{"emailAddress": email, "groups": [], "userGroups": []}]))
        .send()
        .await
}

async fn get(m: &RunningMock, path: &str) -> reqwest::Result<Response> {
    client()
        .get(format!("{}{path}", m.url))
        .bearer_auth(TOKEN)
        .send()
        .await
}

async fn csp_token(m: &RunningMock) -> String {
    access_token(&client(), m, TOKEN).await
}

fn last(m: &RunningMock) -> JournalEntry {
    m.api.journal().pop().expect("a journal entry")
}

/// Waits until the mock has finished with every request (held ones aside).
async fn settled(m: &RunningMock) {
    for _ in 0..200 {
        if m.api.journal().iter().all(|e| {
            e.status != 0 || e.answered.is_some() || e.fault_kind.as_deref() == Some("timeout")
        }) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("the mock did not finish: {:?}", m.api.journal());
}

#[tokio::test]
async fn timeout_holds_the_request_until_the_client_gives_up() {
    let m = start().await;
    m.api.add_fault(ScriptedFault::timeout().path(INVITE));
    let err = invite(&m, "held@example.com").await.expect_err("no answer");
    assert!(err.is_timeout(), "{err}");
    let e = last(&m);
    assert_eq!((e.status, e.answered, e.performed), (0, None, false));
    assert_eq!(e.fault_kind.as_deref(), Some("timeout"));
    assert_eq!(m.api.invitations_sent_to("held@example.com"), 0);

    // With afterEffect the invitation goes out, the answer never comes.
    m.api
        .add_fault(ScriptedFault::timeout().path(INVITE).after_effect(true));
    let err = invite(&m, "lost@example.com").await.expect_err("no answer");
    assert!(err.is_timeout(), "{err}");
    assert_eq!(m.api.invitations_sent_to("lost@example.com"), 1);
    assert!(last(&m).performed);
    // The next request is served normally; shutting down lets the held ones go.
    assert_eq!(get(&m, "/api/v2/user").await.expect("answer").status(), 200);
    tokio::time::timeout(Duration::from_secs(2), m.shutdown())
        .await
        .expect("shutdown does not wait for held requests");
}

#[tokio::test]
async fn reset_closes_the_connection_without_an_answer() {
    let m = start().await;
    m.api
        .add_fault(ScriptedFault::reset().path(INVITE).after_effect(true));
    let err = invite(&m, "reset@example.com")
        .await
        .expect_err("no answer");
    assert!(!err.is_timeout() && err.status().is_none(), "{err:?}");
    assert_eq!(m.api.invitations_sent_to("reset@example.com"), 1);
    settled(&m).await;
    let e = last(&m);
    assert_eq!(e.status, 0);
    assert!(e.answered.is_some() && e.performed && e.fault);
    assert_eq!(e.fault_kind.as_deref(), Some("reset"));

    m.api.add_fault(ScriptedFault::reset().path(INVITE));
    assert!(invite(&m, "never@example.com").await.is_err());
    assert_eq!(m.api.invitations_sent_to("never@example.com"), 0);
    // The connection pool recovers.
    assert_eq!(get(&m, "/api/v2/user").await.expect("answer").status(), 200);
}

#[tokio::test]
async fn truncated_bodies_announce_more_than_they_send() {
    let m = start().await;
    m.api
        .add_fault(ScriptedFault::truncated().path(INVITE).after_effect(true));
    let r = invite(&m, "cut@example.com").await.expect("headers arrive");
    assert_eq!(r.status(), StatusCode::OK);
    let announced = r.content_length().expect("Content-Length");
    assert!(announced > 10);
    let err = r.bytes().await.expect_err("the body is cut short");
    assert!(err.is_body() || err.is_decode(), "{err:?}");
    assert_eq!(m.api.invitations_sent_to("cut@example.com"), 1);
    settled(&m).await;
    assert_eq!(last(&m).fault_kind.as_deref(), Some("truncated"));

    // Same on the OrgInvitation API, without the effect.
    let token = csp_token(&m).await;
    m.api
        .add_fault(ScriptedFault::truncated().path(CSP).method("GET"));
    let r = client()
        .get(format!("{}{CSP}/v2/orgs/mock-org/users", m.url))
        .header("csp-auth-token", &token)
        .send()
        .await
        .expect("headers arrive");
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.text().await.is_err());
}

#[tokio::test]
async fn huge_bodies_are_valid_json_of_the_asked_size() {
    let m = start().await;
    let size = 3 * 1024 * 1024 + 7;
    m.api.add_fault(ScriptedFault::huge_body(size));
    let r = get(&m, "/api/v2/user").await.expect("answer");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.content_length(), Some(size as u64));
    let bytes = r.bytes().await.expect("whole body");
    assert_eq!(bytes.len(), size);
    let v: Value = serde_json::from_slice(&bytes).expect("valid JSON");
    assert_eq!(v["status"]["result"], "OK");
    assert!(
        v["status"]["message"]
            .as_str()
            .is_some_and(|s| s.len() > 3_000_000)
    );

    // A size smaller than the JSON frame still gives valid JSON.
    m.api.add_fault(ScriptedFault::huge_body(1));
    let v = json_of(get(&m, "/api/v2/user").await).await;
    assert!(v.is_object());
}

#[tokio::test]
async fn redirects_non_json_and_error_bodies_in_a_200() {
    let m = start().await;
    m.api.add_fault(
        ScriptedFault::redirect(307, "https://elsewhere.example.com/api/v2/user/invite")
            .path(INVITE),
    );
    let r = invite(&m, "r@example.com").await.expect("answer");
    assert_eq!(r.status(), StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(
        r.headers().get("location").and_then(|v| v.to_str().ok()),
        Some("https://elsewhere.example.com/api/v2/user/invite")
    );
    assert_eq!(m.api.invitations_sent_to("r@example.com"), 0);

    m.api
        .add_fault(ScriptedFault::non_json().path(INVITE).after_effect(true));
    let r = invite(&m, "html@example.com").await.expect("answer");
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|c| c.starts_with("text/html"))
    );
    let text = r.text().await.expect("body");
    assert!(serde_json::from_str::<Value>(&text).is_err(), "{text}");
    assert_eq!(m.api.invitations_sent_to("html@example.com"), 1);

    m.api
        .add_fault(ScriptedFault::error_body_200().path(INVITE));
    let r = invite(&m, "e@example.com").await.expect("answer");
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().await.expect("JSON");
    assert_eq!(v["status"]["result"], "ERROR");
    assert_eq!(v["status"]["code"], 400);
    assert!(v["status"]["message"].is_string());
    assert_eq!(m.api.invitations_sent_to("e@example.com"), 0);

    // The OrgInvitation flavour: a CspErrorResponse in a 200, after the effect.
    let token = csp_token(&m).await;
    m.api.add_fault(
        ScriptedFault::error_body_200()
            .path(&format!("{CSP}/orgs/"))
            .after_effect(true),
    );
    let r = client()
        .post(format!("{}{CSP}/orgs/mock-org/invitations", m.url))
        .header("csp-auth-token", &token)
        .json(&json!({"usernames": ["csp@example.com"]}))
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().await.expect("JSON");
    assert_eq!(v["statusCode"], 400);
    assert_eq!(m.api.invitations_sent_to("csp@example.com"), 1);
}

#[tokio::test]
async fn unknown_users_appear_in_answers() {
    let m = start().await;
    m.api
        .seed_user(json!({"emailAddress": "alice@example.com"}));
    m.api
        .add_fault(ScriptedFault::unknown_users().path("/api/v2/user/validateUsers"));
    let v = json_of(
        client()
            .post(format!("{}/api/v2/user/validateUsers", m.url))
            .bearer_auth(TOKEN)
            .json(&json!(["alice@example.com", "bob@example.com"]))
            .send()
            .await,
    )
    .await;
    let valid: Vec<&str> = v["response"]["validUsers"]
        .as_array()
        .expect("validUsers")
        .iter()
        .filter_map(|u| u["identifier"].as_str())
        .collect();
    assert_eq!(valid.len(), 2, "{v}");
    assert_eq!(valid[0], "alice@example.com");
    assert!(
        m.api.user(valid[1]).is_none(),
        "{} does not exist",
        valid[1]
    );
    let invalid = v["response"]["invalidIdentifiers"].as_array().expect("ids");
    assert_eq!(invalid.len(), 2, "{v}");

    // An invite without afterEffect: nothing happens, and the answer names someone else.
    m.api.add_fault(ScriptedFault::unknown_users().path(INVITE));
    let v = json_of(invite(&m, "carol@example.com").await).await;
    assert_ne!(v["identifier"], "carol@example.com");
    assert_eq!(m.api.invitations_sent_to("carol@example.com"), 0);
    assert!(m.api.user("carol@example.com").is_none());
    // With afterEffect it happens.
    m.api.add_fault(
        ScriptedFault::unknown_users()
            .path(INVITE)
            .after_effect(true),
    );
    invite(&m, "carol@example.com").await.expect("answer");
    assert_eq!(m.api.invitations_sent_to("carol@example.com"), 1);

    // Lists: users, invitations, org members.
    m.api
        .add_fault(ScriptedFault::unknown_users().method("GET"));
    let users = json_of(get(&m, "/api/v2/user").await).await;
    assert_eq!(users.as_array().map(Vec::len), Some(3));
    let token = csp_token(&m).await;
    m.api
        .add_fault(ScriptedFault::unknown_users().method("GET").times(2));
    for (path, pointer) in [
        ("/orgs/mock-org/invitations", ""),
        ("/v2/orgs/mock-org/users", "/results"),
    ] {
        let v = json_of(
            client()
                .get(format!("{}{CSP}{path}", m.url))
                .header("csp-auth-token", &token)
                .send()
                .await,
        )
        .await;
        let items = v
            .pointer(pointer)
            .and_then(Value::as_array)
            .expect("a list");
        assert_eq!(items.len(), 1, "{path}: {v}");
    }
    assert!(m.api.org_invitations().is_empty() && m.api.org_members().is_empty());
}

#[tokio::test]
async fn new_fault_kinds_over_the_control_endpoint() {
    let m = start().await;
    let http = Client::new();
    let url = format!("{}/mock/faults", m.url);
    for (body, kind) in [
        (
            json!({"kind": "timeout", "pathPrefix": INVITE, "afterEffect": true}),
            "timeout",
        ),
        (json!({"kind": "hugeBody", "bytes": 2048}), "hugeBody"),
        (
            json!({"kind": "redirect", "location": "https://x.example.com/"}),
            "redirect",
        ),
        (json!({"status": 503, "retryAfter": 3}), "status"),
    ] {
        let r = http.post(&url).json(&body).send().await.expect("answer");
        assert_eq!(r.status(), StatusCode::CREATED, "{body}");
        let v: Value = r.json().await.expect("JSON");
        assert_eq!(v["kind"], kind);
    }
    let listed: Vec<ScriptedFault> = http
        .get(&url)
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("JSON");
    assert_eq!(listed.len(), 4);
    assert!(listed[0].after_effect);
    assert_eq!(listed[1].kind, FaultKind::HugeBody { bytes: 2048 });
    assert_eq!(listed[2].status(), Some(302));
    assert_eq!(listed[3].retry_after, Some(3));
    for bad in [
        json!({"kind": "hugeBody"}),
        json!({"kind": "teapot"}),
        json!({"status": 42}),
    ] {
        let r = http.post(&url).json(&bad).send().await.expect("answer");
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{bad}");
    }
}

fn mix() -> FaultMix {
    FaultMix {
        server_error: 0.30,
        too_many_requests: 0.10,
        retry_after_secs: Some(1),
        timeout: 0.05,
        truncated: 0.05,
        reset: 0.05,
        after_effect: 0.5,
        token_exchange: false,
    }
}

/// The fault kind (or status) of each answer, for `n` sequential reads.
async fn draw_reads(m: &RunningMock, n: usize) -> Vec<String> {
    let http = Client::builder()
        .timeout(Duration::from_millis(100))
        .build()
        .expect("client");
    for _ in 0..n {
        let sent = http
            .get(format!("{}/api/v2/user", m.url))
            .bearer_auth(TOKEN)
            .send()
            .await;
        if let Ok(r) = sent {
            let _ = r.bytes().await;
        }
    }
    settled(m).await;
    m.api
        .journal()
        .iter()
        .map(|e| match e.fault_kind.as_deref() {
            Some("status") => e.status.to_string(),
            Some(k) => k.to_string(),
            None => "ok".to_string(),
        })
        .collect()
}

#[tokio::test]
async fn the_fault_mix_is_seeded_and_spares_control_and_token_requests() {
    let config = MockConfig {
        fault_mix: mix(),
        seed: 11,
        ..MockConfig::default()
    };
    let a = MockApi::start(config.clone()).await.expect("mock");
    let b = MockApi::start(config).await.expect("mock");
    let (xa, xb) = (draw_reads(&a, 120).await, draw_reads(&b, 120).await);
    assert_eq!(xa, xb, "same seed, same faults");
    let count = |k: &str| xa.iter().filter(|x| x.as_str() == k).count();
    let server = count("500") + count("502") + count("503") + count("504");
    assert!((20..=55).contains(&server), "{xa:?}");
    assert!((4..=22).contains(&count("429")), "{xa:?}");
    assert!(count("ok") > 40, "{xa:?}");
    assert!(
        count("timeout") + count("truncated") + count("reset") > 3,
        "{xa:?}"
    );
    for e in a.api.journal().iter().filter(|e| e.status == 429) {
        assert_eq!(e.retry_after, Some(1));
    }
    // Reads never take effect "after" a fault; they are simply not performed.
    assert!(a.api.journal().iter().all(|e| e.performed != e.fault));
    // Control requests and the token exchange are never faulted.
    for _ in 0..20 {
        assert!(!csp_token(&a).await.is_empty());
        let st = Client::new()
            .get(format!("{}/mock/state", a.url))
            .send()
            .await
            .expect("state");
        assert_eq!(st.status(), StatusCode::OK);
    }
    a.shutdown().await;
}

#[tokio::test]
async fn mixed_faults_on_mutating_requests_may_take_effect_first() {
    let m = MockApi::start(MockConfig {
        fault_mix: FaultMix {
            server_error: 1.0,
            after_effect: 1.0,
            ..FaultMix::default()
        },
        seed: 5,
        ..MockConfig::default()
    })
    .await
    .expect("mock");
    for i in 0..40 {
        let r = invite(&m, &format!("u{i}@example.com"))
            .await
            .expect("answer");
        assert!(r.status().is_server_error());
    }
    let j = m.api.journal();
    assert!(j.iter().all(|e| e.fault));
    for (i, e) in j.iter().enumerate() {
        let sent = m.api.invitations_sent_to(&format!("u{i}@example.com"));
        // 503 says nothing was done; 500, 502 and 504 leave the outcome unknown.
        let expect = usize::from(e.status != 503);
        assert_eq!((sent, e.performed), (expect, expect == 1), "{e:?}");
    }
    assert!(j.iter().any(|e| e.status == 503) && j.iter().any(|e| e.status != 503));
}

#[tokio::test]
async fn the_fault_mix_over_the_settings_endpoint() {
    let m = start().await;
    let http = Client::new();
    let url = format!("{}/mock/settings", m.url);
    let v = json_of(
        http.put(&url)
            .json(&json!({"latencyMs": 0, "faultMix": {"serverError": 1.0, "tokenExchange": true}}))
            .send()
            .await,
    )
    .await;
    assert_eq!(v["faultMix"]["serverError"], 1.0);
    assert_eq!(m.api.fault_mix().server_error, 1.0);
    assert!(
        get(&m, "/api/v2/user")
            .await
            .expect("answer")
            .status()
            .is_server_error()
    );
    let r = exchange(&client(), &m, TOKEN).await.expect("answer");
    assert!(
        r.status().is_server_error(),
        "tokenExchange: true faults the exchange"
    );
    for bad in [
        json!({"faultMix": {"serverError": 0.8, "reset": 0.3}}),
        json!({"faultMix": {"timeout": -1}}),
        json!({"faultMix": {"surprise": 1}}),
    ] {
        let r = http.put(&url).json(&bad).send().await.expect("answer");
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{bad}");
    }
    let r = http
        .put(&url)
        .json(&json!({"faultMix": null}))
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), StatusCode::OK);
    assert!(m.api.fault_mix().is_off());
    assert_eq!(get(&m, "/api/v2/user").await.expect("answer").status(), 200);
}

#[tokio::test]
async fn retry_after_violations_are_listed_per_family_and_credential() {
    let m = start().await;
    m.api.add_fault(
        ScriptedFault::new(429)
            .path("/api/v2/user")
            .method("GET")
            .retry_after(30),
    );
    let first = get(&m, "/api/v2/user").await.expect("answer");
    assert_eq!(first.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        first
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("30")
    );
    assert!(m.api.retry_after_violations().is_empty());
    // Too early: the same API and token.
    assert_eq!(get(&m, "/api/v2/user").await.expect("answer").status(), 200);
    // Not restricted: another token, another API family, the token exchange.
    let _ = client()
        .get(format!("{}/api/v2/user", m.url))
        .bearer_auth("someone-else")
        .send()
        .await;
    let token = csp_token(&m).await;
    let _ = client()
        .get(format!("{}{CSP}/orgs/mock-org/invitations", m.url))
        .header("csp-auth-token", &token)
        .send()
        .await;
    // A CSP access token counts as the API token it came from (token-1 here too).
    let j = m.api.journal();
    assert_eq!(j[0].credential.as_deref(), Some("token-1"));
    assert_eq!(j[2].credential.as_deref(), Some("token-2"));
    assert_eq!(j[3].credential.as_deref(), Some("token-1"));
    assert_eq!(j[4].credential.as_deref(), Some("token-1"));
    assert!(j.windows(2).all(|w| w[0].offset <= w[1].offset));
    assert!(j.iter().all(|e| e.answered.is_some_and(|a| a >= e.offset)));
    let dump = serde_json::to_string(&j).expect("JSON");
    assert!(!dump.contains(TOKEN) && !dump.contains(&token));

    let v = m.retry_after_violations();
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!(v[0].family, ApiFamily::UserInvite);
    assert_eq!((v[0].throttled.seq, v[0].request.seq), (j[0].seq, j[1].seq));
    assert!(v[0].early_by > Duration::from_secs(29));
    let over_http = control(&m, "retry-after-violations").await;
    assert_eq!(over_http[0]["request"]["seq"], j[1].seq);
    assert_eq!(over_http[0]["family"], "UserInvite");

    // Requests already in flight when the Retry-After left are not violations.
    m.api.clear_journal();
    m.api.set_latency(Duration::from_millis(150));
    m.api
        .add_fault(ScriptedFault::new(503).method("GET").retry_after(30));
    let (a, b) = tokio::join!(get(&m, "/api/v2/user"), async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        get(&m, "/api/v2/user").await
    });
    assert_eq!(a.expect("answer").status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(b.expect("answer").status(), StatusCode::OK);
    assert!(m.api.retry_after_violations().is_empty());
}

#[tokio::test]
async fn body_faults_late_faults_and_body_matchers() {
    let m = start().await;
    // Only the request whose body names b@ gets the fault.
    m.api.add_fault(
        ScriptedFault::body(200, r#"{"validUsers": 42}"#)
            .path(INVITE)
            .body_contains("\"b@example.com\""),
    );
    let a = invite(&m, "a@example.com").await.unwrap();
    assert_eq!(a.status(), StatusCode::OK);
    assert!(!last(&m).fault);
    let b = invite(&m, "b@example.com").await.unwrap();
    assert_eq!(b.status(), StatusCode::OK);
    assert_eq!(b.text().await.unwrap(), r#"{"validUsers": 42}"#);
    let entry = last(&m);
    assert_eq!(entry.fault_kind.as_deref(), Some("body"));
    assert!(!entry.performed);
    assert_eq!(m.api.invitations_sent_to("b@example.com"), 0);
    // A late request: the client (300 ms timeout) gives up, the mock acts after 500 ms.
    m.api
        .add_fault(ScriptedFault::late(Duration::from_millis(500)).path(INVITE));
    assert!(
        invite(&m, "c@example.com").await.is_err(),
        "the client timed out"
    );
    assert_eq!(m.api.invitations_sent_to("c@example.com"), 0, "not yet");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(m.api.invitations_sent_to("c@example.com"), 1, "acted late");
    // The JSON forms round-trip.
    for fault in [
        ScriptedFault::body(502, "[]").body_contains("x"),
        ScriptedFault::late(Duration::from_millis(5)),
    ] {
        let json = serde_json::to_value(&fault).unwrap();
        assert_eq!(
            serde_json::from_value::<ScriptedFault>(json).unwrap(),
            fault
        );
    }
    assert!(matches!(
        serde_json::from_value::<ScriptedFault>(
            json!({"kind": "body", "status": 200, "body": "{}"})
        )
        .unwrap()
        .kind,
        FaultKind::Body { status: 200, .. }
    ));
}

#[tokio::test]
async fn an_unknown_organization_role_is_refused_for_everyone_alike() {
    let m = start().await;
    let token = csp_token(&m).await;
    let invite = |usernames: Value, role: &str| {
        let body = json!({"usernames": usernames, "organizationRoles": [{"name": role}]});
        let (url, token) = (
            format!("{}{CSP}/orgs/mock-org/invitations", m.url),
            token.clone(),
        );
        async move {
            client()
                .post(url)
                .header("csp-auth-token", token)
                .json(&body)
                .send()
                .await
                .unwrap()
        }
    };
    let one = invite(json!(["a@example.com"]), "no_such_role").await;
    assert_eq!(one.status(), StatusCode::BAD_REQUEST);
    let one: Value = one.json().await.unwrap();
    let many = invite(json!(["b@example.com", "c@example.com"]), "no_such_role").await;
    let many: Value = many.json().await.unwrap();
    assert_eq!(one["message"], many["message"], "the message names no user");
    assert!(one["message"].as_str().unwrap().contains("no_such_role"));
    assert_eq!(m.api.emails_sent().len(), 0);
    m.api.seed_org_role("no_such_role");
    let ok = invite(json!(["a@example.com"]), "no_such_role").await;
    assert_eq!(ok.status(), StatusCode::ACCEPTED);
    assert_eq!(m.api.invitations_sent_to("a@example.com"), 1);
    // A member removed by an admin is no longer listed.
    m.api.seed_org_member("gone@example.com");
    assert!(m.api.remove_org_member("gone@example.com"));
    assert!(!m.api.remove_org_member("gone@example.com"));
}

#[tokio::test]
async fn a_status_fault_can_carry_its_own_message() {
    let m = start().await;
    let long = "x".repeat(64 * 1024);
    m.api.add_fault(
        ScriptedFault::new(400)
            .path(INVITE)
            .message(long.clone())
            .times(2),
    );
    let r = invite(&m, "a@example.com").await.expect("answer");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let body: Value = r.json().await.expect("JSON");
    assert_eq!(body["status"]["message"], json!(long));
    let r = client()
        .post(format!("{}/mock/faults", m.url))
        .json(&json!({"status": 400, "message": "nope", "pathPrefix": CSP}))
        .send()
        .await
        .expect("control");
    assert_eq!(r.status(), StatusCode::CREATED);
    let faults = m.api.pending_faults();
    assert_eq!(faults.last().unwrap().message.as_deref(), Some("nope"));
}

#[tokio::test]
async fn a_rotated_token_replaces_the_old_one() {
    let m = start().await;
    let before = csp_token(&m).await;
    m.api.set_token("rotated-token");
    assert_eq!(
        invite(&m, "a@example.com").await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    let r = client()
        .post(format!("{}{INVITE}", m.url))
        .bearer_auth("rotated-token")
        .json(&json!([{"emailAddress": "b@example.com", "groups": [], "userGroups": []}]))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    // The old API token no longer exchanges; the access token issued before still works.
    assert_eq!(csp_token(&m).await, "");
    assert!(m.api.access_tokens().contains(&before));
    let r = client()
        .put(format!("{}/mock/settings", m.url))
        .json(&json!({"token": "again"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        !r.text().await.unwrap().contains("again"),
        "the token is never shown"
    );
}
