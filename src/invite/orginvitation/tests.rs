//! Unit tests of decoding the organization.

use std::collections::BTreeMap;

use serde_json::json;

use super::*;

#[test]
fn invitations_decode_leniently() {
    let v = json!([
        {"username": "A@example.com", "status": "AVAILABLE", "refLink": "/x/1",
         "generatedAt": 1_763_800_000_000_i64, "expirationTime": "1764404800000"},
        {"username": "b@example.com", "status": "REVOKED", "refLink": "/x/2", "extra": true},
        {"status": "AVAILABLE"}
    ]);
    let list: Vec<_> = items(&v).iter().filter_map(invitation).collect();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0].username, "a@example.com");
    assert_eq!(list[0].expires_at.unwrap().as_second(), 1_764_404_800);
    let wrapped = json!({"results": v});
    assert_eq!(items(&wrapped).len(), 3);
}

#[test]
fn members_win_then_the_newest_invitation_decides() {
    let inv = |user: &str, status: &str, at: i64| OrgInvitation {
        username: user.into(),
        status: status.into(),
        ref_link: format!("/{user}/{at}"),
        generated_at: Timestamp::from_second(at).ok(),
        expires_at: Timestamp::from_second(at + 100).ok(),
    };
    let invitations = vec![
        inv("a@x.com", "REVOKED", 1),
        inv("a@x.com", "AVAILABLE", 2),
        inv("b@x.com", "AVAILABLE", 1),
        inv("b@x.com", "REVOKED", 2),
        inv("m@x.com", "REDEEMED", 1),
        inv("r@x.com", "REDEEMED", 1),
    ];
    let members = BTreeMap::from([("m@x.com".to_string(), "idp:m".to_string())]);
    let observe =
        |email: &str| observe_one(email, members.get(email).map(String::as_str), &invitations);
    assert!(
        matches!(observe("a@x.com"), Observed::PendingInvitation { reference, .. } if reference == "/a@x.com/2")
    );
    assert!(matches!(
        observe("b@x.com"),
        Observed::RevokedInvitation { .. }
    ));
    assert_eq!(
        observe("m@x.com"),
        Observed::Member {
            identifier: "idp:m".into(),
            accepted: true,
            grants: None
        }
    );
    // Redeemed but not (yet) listed as a member: accepted, never revoked.
    assert!(matches!(
        observe("r@x.com"),
        Observed::RedeemedInvitation { .. }
    ));
    assert_eq!(observe("z@x.com"), Observed::Absent);
}

#[test]
fn timestamps_in_millis_seconds_or_rfc3339() {
    assert_eq!(
        timestamp(Some(&json!(1_700_000_000_000_i64)))
            .unwrap()
            .as_second(),
        1_700_000_000
    );
    assert_eq!(
        timestamp(Some(&json!(1_700_000_000))).unwrap().as_second(),
        1_700_000_000
    );
    assert_eq!(
        timestamp(Some(&json!("2026-11-22T10:00:00.5Z")))
            .unwrap()
            .as_second(),
        Timestamp::from_second(1_795_341_600).unwrap().as_second()
    );
    assert_eq!(timestamp(Some(&json!("soon"))), None);
}

mod properties {
    use proptest::prelude::*;

    use super::*;
    use crate::invite::json_strategy::json;

    fn username() -> impl Strategy<Value = String> {
        (0..5u8, any::<bool>(), any::<bool>()).prop_map(|(i, plus, upper)| {
            let u = if plus {
                format!("p{i}+ops@x.com")
            } else {
                format!("p{i}@x.com")
            };
            if upper { u.to_uppercase() } else { u }
        })
    }

    fn invitation_json() -> impl Strategy<Value = serde_json::Value> {
        (
            username(),
            prop::sample::select(vec!["AVAILABLE", "REDEEMED", "REVOKED", "available", "??"]),
            prop::option::of(0i64..10),
        )
            .prop_map(|(u, status, at)| {
                serde_json::json!({"username": u, "status": status, "refLink": format!("/{u}"),
                    "generatedAt": at.map(|a| 1_700_000_000_000_i64 + a * 1000)})
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        #[test]
        fn any_json_decodes_or_is_skipped_without_panicking(value in json()) {
            for item in items(&value) {
                let _ = invitation(item);
                let _ = member(item);
            }
            let _ = timestamp(Some(&value));
        }

        #[test]
        fn an_address_is_matched_only_to_its_own_member_or_invitations(
            members in prop::collection::vec(username(), 0..5),
            invitations in prop::collection::vec(invitation_json(), 0..8),
            asked in (0..5u8).prop_map(|i| format!("p{i}@x.com")),
        ) {
            let listed = serde_json::json!({"results": members.iter().map(|m| serde_json::json!({"user": {"username": m}})).collect::<Vec<_>>()});
            let ids: BTreeMap<String, String> = items(&listed).iter().filter_map(member).collect();
            let invitations: Vec<OrgInvitation> = items(&serde_json::json!(invitations)).iter().filter_map(invitation).collect();
            let observed = observe_one(&asked, ids.get(&asked).map(String::as_str), &invitations);
            let is_member = members.iter().any(|m| m.eq_ignore_ascii_case(&asked));
            // A member wins, matched ignoring case only; `p1+ops` is never `p1`.
            prop_assert_eq!(matches!(observed, Observed::Member { .. }), is_member);
            let mine: Vec<&OrgInvitation> = invitations
                .iter()
                .filter(|i| i.username == asked)
                .collect();
            match &observed {
                Observed::Absent => {
                    let newest = mine.iter().max_by_key(|i| (i.generated_at, i.status == "AVAILABLE"));
                    prop_assert!(newest.is_none_or(|i| !["AVAILABLE", "REDEEMED", "REVOKED"].contains(&i.status.as_str())));
                }
                Observed::PendingInvitation { reference, .. }
                | Observed::RedeemedInvitation { reference }
                | Observed::RevokedInvitation { reference } => {
                    prop_assert!(!is_member);
                    prop_assert!(mine.iter().any(|i| &i.ref_link == reference), "{} is not {}'s", reference, asked);
                }
                Observed::Member { .. } => {}
            }
            // A redeemed invitation is never reported revoked or absent when it is the newest.
            if !is_member
                && let Some(newest) = mine.iter().max_by_key(|i| (i.generated_at, i.status == "AVAILABLE"))
                && newest.status == "REDEEMED"
            {
                prop_assert!(matches!(observed, Observed::RedeemedInvitation { .. }), "{:?}", observed);
            }
        }
    }
}

/// The client against the in-process mock: which reads a lookup makes.
mod reads {
    use std::{sync::Arc, time::Duration};

    use invite_mock::{MockApi, MockConfig, RunningMock};

    use crate::{
        api::UserInvitationSpec,
        invite::{
            ApiToken, InviteApi, InvitePayload, InviteRequest, Lookup, LookupLimits, Observed,
            Transport, TransportSettings,
            orginvitation::{OrgInvitationClient, connect},
        },
        telemetry::ApiCallRecorder,
    };

    async fn mock(members: impl IntoIterator<Item = String>) -> RunningMock {
        let mock = MockApi::start(MockConfig::default()).await.unwrap();
        mock.api.seed_org_members(members);
        mock
    }

    /// A mock API with these members, and a client of it.
    async fn org(members: impl IntoIterator<Item = String>) -> (RunningMock, OrgInvitationClient) {
        let mock = mock(members).await;
        let client = client(&mock);
        (mock, client)
    }

    fn client(mock: &RunningMock) -> OrgInvitationClient {
        client_with(mock, LookupLimits::default())
    }

    fn client_with(mock: &RunningMock, limits: LookupLimits) -> OrgInvitationClient {
        let connection = serde_json::from_value(serde_json::json!({
            "api": "OrgInvitation", "url": mock.url, "organizationId": "mock-org",
            "credentials": {"secretRef": {"name": "token"}},
        }))
        .unwrap();
        let transport = Transport::new(
            "test",
            TransportSettings {
                timeout: Duration::from_secs(10),
                requests_per_second: 1000,
                read_attempts: 1,
                limits,
                ..TransportSettings::default()
            },
            ApiCallRecorder::default(),
        )
        .unwrap();
        connect(
            &mock.url,
            &connection,
            ApiToken::new("mock-token"),
            transport,
        )
        .unwrap()
    }

    fn lookups(emails: &[&str]) -> Vec<Lookup> {
        emails.iter().map(|e| Lookup::email(*e)).collect()
    }

    fn calls(mock: &RunningMock, operation: &str) -> usize {
        mock.api
            .calls_by_operation()
            .get(operation)
            .copied()
            .unwrap_or(0)
    }

    /// How often the members were read so far: pages listed, searches.
    fn member_reads(mock: &RunningMock) -> (usize, usize) {
        (calls(mock, "list members"), calls(mock, "search members"))
    }

    fn members(n: usize) -> impl Iterator<Item = String> {
        (0..n).map(|i| format!("m{i:05}@corp.example.com"))
    }

    async fn invite(client: &OrgInvitationClient, emails: &[&str]) {
        let spec: UserInvitationSpec = serde_json::from_value(serde_json::json!({
            "endpointRef": {"kind": "InvitationEndpoint", "name": "csp"},
            "orgInvitation": {"usernames": emails, "organizationRoles": [{"name": "org_member"}]},
        }))
        .unwrap();
        let payload = Arc::new(*spec.org_invitation.unwrap());
        let requests: Vec<InviteRequest> = emails
            .iter()
            .map(|e| InviteRequest {
                email: e.to_string(),
                payload: InvitePayload::Org(payload.clone()),
                resend: false,
            })
            .collect();
        let send_by = tokio::time::Instant::now() + Duration::from_secs(10);
        let outcomes = client.invite(&requests, send_by).await;
        assert_eq!(outcomes.len(), emails.len(), "{outcomes:?}");
    }

    #[tokio::test]
    async fn own_invitations_and_revocations_never_read_the_members_again() {
        let (mock, client) = org(members(450)).await;
        let asked = ["a@x.com", "b@x.com", "m00400@corp.example.com"];
        let first = client.look_up(&lookups(&asked)).await.unwrap();
        assert!(matches!(
            first["m00400@corp.example.com"],
            Observed::Member { .. }
        ));
        assert_eq!(first["a@x.com"], Observed::Absent);
        // Three addresses cost more searches than the two pages left: the listing is read.
        assert_eq!(member_reads(&mock), (3, 0));
        invite(&client, &["a@x.com", "b@x.com"]).await;
        let after = client.look_up(&lookups(&asked)).await.unwrap();
        let Observed::PendingInvitation { reference, .. } = &after["a@x.com"] else {
            panic!("{after:?}");
        };
        assert!(
            client
                .remove("a@x.com", Some(reference))
                .await
                .unwrap()
                .is_some()
        );
        let revoked = client.look_up(&lookups(&asked)).await.unwrap();
        assert!(matches!(
            revoked["a@x.com"],
            Observed::RevokedInvitation { .. }
        ));
        assert!(matches!(
            revoked["b@x.com"],
            Observed::PendingInvitation { .. }
        ));
        // The members were read once; the invitations once per lookup, read-back and revoke.
        assert_eq!(member_reads(&mock), (3, 0));
        assert_eq!(calls(&mock, "list invitations"), 5);
    }

    #[tokio::test]
    async fn a_few_addresses_in_a_large_organization_are_searched_and_kept() {
        let (mock, client) = org(members(2_000)).await;
        let asked = ["m01999@corp.example.com", "new@x.com"];
        let found = client.look_up(&lookups(&asked)).await.unwrap();
        assert!(
            matches!(found["m01999@corp.example.com"], Observed::Member { ref identifier, .. } if !identifier.is_empty())
        );
        assert_eq!(found["new@x.com"], Observed::Absent);
        // The first page (for the member count), then one search per address.
        assert_eq!(member_reads(&mock), (1, 2));
        // Known now: asked again, only the invitations are read.
        client.look_up(&lookups(&asked)).await.unwrap();
        let (listed, searched) = member_reads(&mock);
        assert_eq!(listed + searched, 3);
        assert_eq!(calls(&mock, "list invitations"), 2);
        // As many new addresses as the listing has pages: the listing is cheaper.
        let many: Vec<String> = (0..10).map(|i| format!("n{i}@x.com")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        client.look_up(&lookups(&many)).await.unwrap();
        assert_eq!(member_reads(&mock), (1 + 10, 2));
    }

    #[tokio::test]
    async fn a_search_that_fills_its_page_falls_back_to_the_listing() {
        // 25 members whose usernames contain "ann@x.com", none of them that address.
        let decoys = (0..25).map(|i| format!("j{i}ann@x.com"));
        let (mock, client) = org(decoys.chain(members(1_000))).await;
        let found = client.look_up(&lookups(&["ann@x.com"])).await.unwrap();
        assert_eq!(found["ann@x.com"], Observed::Absent);
        // One search; 1,025 members: six pages, the first one read once.
        assert_eq!(member_reads(&mock), (6, 1));
        // A full page that names the address exactly decides it.
        let found = client.look_up(&lookups(&["j3ann@x.com"])).await.unwrap();
        assert!(matches!(found["j3ann@x.com"], Observed::Member { .. }));
        let fresh = self::client(&mock);
        let found = fresh.look_up(&lookups(&["j3ann@x.com"])).await.unwrap();
        assert!(matches!(found["j3ann@x.com"], Observed::Member { .. }));
        assert_eq!(member_reads(&mock), (7, 2));
    }

    #[tokio::test]
    async fn a_person_who_accepted_after_membership_was_read_is_seen_at_once() {
        let (mock, client) = org(members(450)).await;
        let asked = ["dana@x.com", "eve@x.com", "fay@x.com"];
        client.look_up(&lookups(&asked)).await.unwrap();
        // Invited by someone else, and accepted: membership as read does not show it yet.
        invite(&self::client(&mock), &["dana@x.com"]).await;
        assert!(mock.api.redeem_invitation("dana@x.com"));
        let now = client.look_up(&lookups(&asked)).await.unwrap();
        assert!(
            matches!(now["dana@x.com"], Observed::RedeemedInvitation { .. }),
            "{now:?}"
        );
        assert_eq!(
            calls(&mock, "list members"),
            3,
            "membership was not read again"
        );
    }

    #[tokio::test]
    async fn an_organization_larger_than_the_budget_is_refused_from_its_count() {
        let mock = mock(members(450)).await;
        let limits = LookupLimits {
            max_members: 300,
            ..LookupLimits::default()
        };
        let client = client_with(&mock, limits);
        let error = client.look_up(&lookups(&["a@x.com"])).await.unwrap_err();
        assert!(
            error.to_string().contains("more than 300 members"),
            "{error}"
        );
        assert!(client.limit_exceeded().is_some());
        assert_eq!(calls(&mock, "list members"), 1, "the first page says");
        assert_eq!(calls(&mock, "list invitations"), 0);
    }
}
