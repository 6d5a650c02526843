//! Unit tests of decoding the organization.

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
    let snapshot = OrgSnapshot {
        invitations: vec![
            inv("a@x.com", "REVOKED", 1),
            inv("a@x.com", "AVAILABLE", 2),
            inv("b@x.com", "AVAILABLE", 1),
            inv("b@x.com", "REVOKED", 2),
            inv("m@x.com", "REDEEMED", 1),
            inv("r@x.com", "REDEEMED", 1),
        ],
        members: BTreeMap::from([("m@x.com".to_string(), "idp:m".to_string())]),
    };
    assert!(
        matches!(observe_one("a@x.com", &snapshot), Observed::PendingInvitation { reference, .. } if reference == "/a@x.com/2")
    );
    assert!(matches!(
        observe_one("b@x.com", &snapshot),
        Observed::RevokedInvitation { .. }
    ));
    assert_eq!(
        observe_one("m@x.com", &snapshot),
        Observed::Member {
            identifier: "idp:m".into(),
            accepted: true,
            grants: None
        }
    );
    // Redeemed but not (yet) listed as a member: accepted, never revoked.
    assert!(matches!(
        observe_one("r@x.com", &snapshot),
        Observed::RedeemedInvitation { .. }
    ));
    assert_eq!(observe_one("z@x.com", &snapshot), Observed::Absent);
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
            let snapshot = OrgSnapshot {
                members: items(&listed).iter().filter_map(member).collect(),
                invitations: items(&serde_json::json!(invitations)).iter().filter_map(invitation).collect(),
            };
            let observed = observe_one(&asked, &snapshot);
            let is_member = members.iter().any(|m| m.eq_ignore_ascii_case(&asked));
            // A member wins, matched ignoring case only; `p1+ops` is never `p1`.
            prop_assert_eq!(matches!(observed, Observed::Member { .. }), is_member);
            let mine: Vec<&OrgInvitation> = snapshot
                .invitations
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
