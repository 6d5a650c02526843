//! The HTTP server of `invite-operator run`: /metrics with the documented series, /healthz,
//! and /readyz following the controller's readiness.

use std::time::Duration;

use invite_operator::{
    health::Readiness,
    telemetry::{Metrics, ReconcileLabels, UserStateLabels},
};

#[tokio::test]
async fn metrics_health_and_readiness_are_served() {
    let metrics = Metrics::new();
    let (endpoint, took) = (
        "InvitationEndpoint/team/wavefront",
        Duration::from_millis(12),
    );
    metrics
        .api_call_recorder()
        .record(endpoint, "invite users", "200", took);
    let ok = ReconcileLabels {
        result: "ok".into(),
    };
    metrics.reconciles.get_or_create(&ok).inc();
    metrics.reconcile_duration.observe(0.02);
    let (namespace, state) = ("team".into(), "Invited".into());
    metrics
        .users
        .get_or_create(&UserStateLabels { namespace, state })
        .set(3);
    let (ready_tx, ready_rx) = tokio::sync::watch::channel(Readiness::WaitingForCrds);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let serve = invite_operator::health::serve(listener, metrics, ready_rx, stop.clone());
    let server = tokio::spawn(serve);
    let http = reqwest::Client::new();
    let get = |path: &str| http.get(format!("http://{addr}{path}")).send();

    assert_eq!(get("/healthz").await.unwrap().status(), 200);
    assert_eq!(get("/readyz").await.unwrap().status(), 503);
    ready_tx.send(Readiness::Ready).unwrap();
    assert_eq!(get("/readyz").await.unwrap().status(), 200);

    let body = get("/metrics").await.unwrap().text().await.unwrap();
    for series in [
        r#"invite_operator_api_calls_total{endpoint="InvitationEndpoint/team/wavefront",operation="invite_users",code="200"} 1"#,
        "invite_operator_api_call_duration_seconds_bucket{",
        r#"invite_operator_reconciles_total{result="ok"} 1"#,
        "invite_operator_reconcile_duration_seconds_count 1",
        r#"invite_operator_users{namespace="team",state="Invited"} 3"#,
    ] {
        assert!(body.contains(series), "missing {series} in:\n{body}");
    }
    stop.cancel();
    server.await.unwrap().unwrap();
}
