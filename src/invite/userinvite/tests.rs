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
fn an_error_body_in_a_success_is_recognized() {
    assert_eq!(
        error_in_success(&json!({"status": {"result": "ERROR", "message": "boom", "code": 400}}))
            .as_deref(),
        Some("boom")
    );
    assert_eq!(
        error_in_success(&json!({"status": {"result": "OK", "code": 200}})),
        None
    );
    assert_eq!(error_in_success(&json!({"identifier": "a@b.c"})), None);
}
