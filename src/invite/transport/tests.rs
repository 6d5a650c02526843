//! Unit tests of the transport: Retry-After, the lease check, the body cap, redirects.

use super::*;

#[test]
fn retry_after_seconds_and_dates() {
    assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
    assert_eq!(
        parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
        Some(Duration::ZERO)
    );
    assert_eq!(parse_retry_after("soon"), None);
}

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A local HTTP/1.1 server answering every connection with `head` then `body` chunks
/// from `chunk` (forever when `endless`); returns its URL and the number of connections.
async fn server(
    head: &'static str,
    endless: bool,
) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = connections.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let mut request = [0u8; 4096];
                let _ = socket.read(&mut request).await;
                if socket.write_all(head.as_bytes()).await.is_err() || !endless {
                    return;
                }
                // A chunked body that never ends: 64 KiB chunks of a JSON string.
                let chunk = format!("10000\r\n{}\r\n", "a".repeat(0x10000));
                while socket.write_all(chunk.as_bytes()).await.is_ok() {}
            });
        }
    });
    (url, connections)
}

fn transport(max_response_bytes: usize) -> Transport {
    Transport::new(
        "test",
        TransportSettings {
            timeout: Duration::from_secs(10),
            requests_per_second: 1000,
            read_attempts: 1,
            max_response_bytes,
            ..TransportSettings::default()
        },
        ApiCallRecorder::default(),
    )
    .unwrap()
}

#[tokio::test]
async fn a_replica_that_lost_its_lease_sends_no_change() {
    let (url, connections) = server("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}", false).await;
    let t = transport(MAX_RESPONSE_BYTES).with_may_act(Arc::new(|| false));
    for method in [Method::POST, Method::PUT, Method::DELETE] {
        let request = t.request(method, &format!("{url}/api/v2/user/invite"));
        let error = t
            .send_mutation("invite users", request, None)
            .await
            .unwrap_err();
        assert_eq!(
            error,
            ApiError::NotSent {
                operation: "invite users",
                reason: NotSentReason::NotLeader
            }
        );
        assert!(!error.may_have_acted());
        assert!(
            error
                .to_string()
                .contains("no longer holds the leader lease")
        );
    }
    assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 0);
    // Reads are not changes: they still go out; and a leader's changes do.
    let read = t
        .send_read("get user", || t.request(Method::GET, &url))
        .await
        .unwrap();
    assert_eq!(read.status, StatusCode::OK);
    let leader = transport(MAX_RESPONSE_BYTES).with_may_act(Arc::new(|| true));
    let request = leader.request(Method::POST, &url);
    assert!(
        leader
            .send_mutation("invite users", request, None)
            .await
            .is_ok()
    );
    assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 2);
}

#[tokio::test]
async fn an_endless_answer_is_cut_off_at_the_cap() {
    let head =
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n";
    let (url, _) = server(head, true).await;
    let cap = 1024 * 1024;
    let t = transport(cap);
    let error = t
        .send_read("validate users", || t.request(Method::GET, &url))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, ApiError::Decode { message, .. } if message.contains("larger than 1 MiB")),
        "{error}"
    );
    // An announced length over the cap is refused before reading.
    let (url, _) = server("HTTP/1.1 200 OK\r\ncontent-length: 20971520\r\n\r\n", false).await;
    let error = t
        .send_read("get user", || t.request(Method::GET, &url))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("larger than 1 MiB"), "{error}");
}

#[tokio::test]
async fn redirects_are_never_followed() {
    let target = server("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}", false).await;
    let head: &'static str = Box::leak(
        format!(
            "HTTP/1.1 307 Temporary Redirect\r\nlocation: {}/elsewhere\r\ncontent-length: 0\r\n\r\n",
            target.0
        )
        .into_boxed_str(),
    );
    let (url, _) = server(head, false).await;
    let t = transport(MAX_RESPONSE_BYTES);
    let error = t
        .send_mutation("invite users", t.request(Method::POST, &url), None)
        .await
        .unwrap_err();
    assert!(
        matches!(&error, ApiError::Configuration { status: 307, message, .. } if message.contains("never followed")),
        "{error}"
    );
    assert_eq!(target.1.load(std::sync::atomic::Ordering::SeqCst), 0);
}

#[test]
fn backoff_grows_and_stays_in_bounds() {
    let base = Duration::from_millis(100);
    for attempt in 1..6 {
        let d = backoff_delay(base, attempt);
        let full = base * (1 << (attempt - 1));
        assert!(d >= full / 2 && d <= full, "{attempt}: {d:?}");
    }
}
