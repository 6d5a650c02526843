//! Unit tests of the client's decoding and decisions.
use super::*;

#[test]
fn invite_body_always_carries_groups_and_user_groups() {
    let user = UserToCreate {
        email_address: "Alice@Example.com".into(),
        groups: vec![],
        user_groups: vec![],
        roles: vec![],
    };
    assert_eq!(
        invite_body(&user),
        json!({"emailAddress": "alice@example.com", "groups": [], "userGroups": []})
    );
    let with_roles = UserToCreate {
        roles: vec!["r".into()],
        ..user
    };
    assert_eq!(invite_body(&with_roles)["roles"], json!(["r"]));
}

#[test]
fn already_exists_messages_are_recognized() {
    assert!(looks_like_already_exists(
        "User with id <a@b.c> is already created in our system."
    ));
    assert!(looks_like_already_exists("user already exists"));
    assert!(!looks_like_already_exists("Invalid permission foo"));
}

#[test]
fn ids_are_encoded_as_one_path_segment() {
    assert_eq!(encode_segment("a+b@example.com"), "a%2Bb%40example.com");
}

#[test]
fn a_success_that_is_not_json_or_carries_an_error_is_not_trusted() {
    use crate::invite::decode::untrusted_success;
    let message =
        untrusted_success(br#"{"status": {"result": "ERROR", "message": "boom", "code": 400}}"#);
    assert!(message.unwrap().contains("boom"));
    let csp = untrusted_success(
        br#"{"statusCode": 400, "message": "bad role", "cspErrorCode": "540.400"}"#,
    );
    assert!(csp.unwrap().contains("bad role"));
    assert!(untrusted_success(b"<html>Sign in</html>").is_some());
    assert!(
        untrusted_success(b"{\"identifier\": \"a@b.c\"").is_some(),
        "cut short"
    );
    assert_eq!(
        untrusted_success(br#"{"status": {"result": "OK", "code": 200}}"#),
        None
    );
    assert_eq!(untrusted_success(br#"{"identifier": "a@b.c"}"#), None);
    assert_eq!(untrusted_success(b""), None);
    assert_eq!(untrusted_success(b" \n"), None);
}
