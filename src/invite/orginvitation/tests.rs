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
