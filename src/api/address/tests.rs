//! The plain-address rule: each refused form with its reason, the forms that stay valid, and
//! the planner's check ([`parse`]) agreeing with the CRD's pattern on every case.

use kube::CustomResourceExt;
use proptest::prelude::*;

use super::*;
use crate::api::UserInvitation;

/// Valid addresses and the person each names.
const VALID: &[(&str, &str)] = &[
    ("alice@example.com", "alice@example.com"),
    ("Alice@Example.COM", "alice@example.com"),
    ("alice+ops@example.com", "alice+ops@example.com"),
    (
        "first.last@mail.example.co.uk",
        "first.last@mail.example.co.uk",
    ),
    ("o'brien@example.com", "o'brien@example.com"),
    (
        "a_b-c=d?e^f{g}h|i~j#k$l&m*n/o`p@example.com",
        "a_b-c=d?e^f{g}h|i~j#k$l&m*n/o`p@example.com",
    ),
    ("x@3com.com", "x@3com.com"),
    ("x@my-host.example.com", "x@my-host.example.com"),
    ("x@xn--exmple-cua.com", "x@xn--exmple-cua.com"),
    ("x@example.xn--p1ai", "x@example.xn--p1ai"),
    ("1@a.io", "1@a.io"),
];

/// Refused addresses and a word of the reason the planner gives.
const REFUSED: &[(&str, &str)] = &[
    ("Alice <alice@example.com>", "whitespace"),
    ("Alice<alice@example.com>", "display name"),
    ("<alice@example.com>", "angle brackets"),
    ("alice@example.com(work)", "comment"),
    ("(work)alice@example.com", "comment"),
    ("\"alice\"@example.com", "quoted"),
    ("\"a b\"@example.com", "whitespace"),
    ("@relay.example.com:alice@example.com", "route"),
    ("alice%example.com@relay.example.com", "routes through"),
    ("relay!alice@example.com", "routes through"),
    ("al\\ice@example.com", "backslash"),
    (" alice@example.com", "whitespace"),
    ("alice@example.com ", "whitespace"),
    ("alice @example.com", "whitespace"),
    ("alice@example.com\n", "whitespace"),
    ("alice\t@example.com", "whitespace"),
    ("alice.@example.com", "dot at the start or end"),
    (".alice@example.com", "dot at the start or end"),
    ("al..ice@example.com", "two dots"),
    ("alice@example.com.", "trailing dot"),
    ("alice@example..com", "two dots"),
    ("alice@.example.com", "starting with a dot"),
    ("alice@localhost", "without a dot"),
    ("alice@[192.0.2.1]", "domain literal"),
    ("alice@192.0.2.1", "top-level domain"),
    ("alice@-example.com", "hyphen"),
    ("alice@example-.com", "hyphen"),
    ("alice@exa_mple.com", "letters, digits and hyphens"),
    ("alice@ex\u{e4}mple.com", "non-ASCII"),
    ("\u{430}lice@example.com", "non-ASCII"),
    ("zero\u{200b}width@example.com", "non-ASCII"),
    ("alice\u{ff20}example.com", "non-ASCII"),
    ("alice@example.com,bob@example.com", "more than one"),
    ("alice@example.com;", "more than one"),
    ("group:alice@example.com;", "route"),
    ("alice@bob@example.com", "more than one @"),
    ("alice.example.com", "no @"),
    ("@example.com", "nothing before"),
    ("alice@", "nothing after"),
    ("", "empty"),
    ("a@example.c\u{0}m", "control"),
];

#[test]
fn plain_addresses_are_accepted_and_fold_to_one_person() {
    for (address, expected) in VALID {
        assert_eq!(parse(address).as_deref(), Ok(*expected), "{address}");
        assert_eq!(person(address), *expected);
        assert!(same_person(address, expected));
    }
    assert!(!same_person("alice@example.com", "alice+ops@example.com"));
    assert!(!same_person("alice@example.com", "alice@example.com.evil"));
}

#[test]
fn each_other_spelling_of_a_mailbox_is_refused_with_its_reason() {
    for (address, reason) in REFUSED {
        let why = parse(address).expect_err(address);
        assert!(why.contains(reason), "{address:?}: {why}");
    }
    let long = format!("{}@example.com", "x".repeat(250));
    assert!(parse(&long).unwrap_err().contains("254"));
    let label = format!("x@{}.com", "a".repeat(64));
    assert!(parse(&label).unwrap_err().contains("63"));
}

/// The CRD's address checks, compiled once: the `pattern` and `maxLength` of both address
/// fields, exactly as the CRD declares them (RE2 and Rust `regex` read this pattern alike).
struct Admission {
    fields: Vec<(regex::Regex, usize)>,
}

impl Admission {
    fn new() -> Admission {
        let crd = serde_json::to_value(UserInvitation::crd()).unwrap();
        let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
        let fields = [
            &spec["users"]["items"]["properties"]["emailAddress"],
            &spec["orgInvitation"]["properties"]["usernames"]["items"],
        ]
        .map(|field| {
            let pattern = field["pattern"].as_str().expect("a pattern on both fields");
            let max = field["maxLength"].as_u64().expect("a maxLength") as usize;
            (regex::Regex::new(pattern).unwrap(), max)
        });
        Admission {
            fields: fields.into(),
        }
    }

    /// Whether the CRD admits `address` as a UserInvite address and as an OrgInvitation
    /// username (both must agree).
    fn admits(&self, address: &str) -> bool {
        let answers: Vec<bool> = self
            .fields
            .iter()
            .map(|(pattern, max)| address.chars().count() <= *max && pattern.is_match(address))
            .collect();
        assert!(answers.windows(2).all(|w| w[0] == w[1]), "{address:?}");
        answers[0]
    }
}

#[test]
fn admission_and_the_planner_agree_on_every_case() {
    let admission = Admission::new();
    for (address, _) in VALID {
        assert!(admission.admits(address), "{address}");
    }
    for (address, _) in REFUSED {
        assert!(!admission.admits(address), "{address:?}");
    }
}

#[test]
fn the_pattern_is_on_both_address_fields_and_no_cel_rule_reads_an_address() {
    let crd = serde_json::to_string(&UserInvitation::crd()).unwrap();
    let pattern = serde_json::to_string(PATTERN).unwrap();
    assert_eq!(
        crd.matches(&pattern).count(),
        2,
        "emailAddress and usernames"
    );
    // A CEL `matches` is compiled per address on every write of the resource, status writes
    // included (see the module docs).
    assert!(!crd.contains("matches("), "{crd}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// Strings built from address-ish pieces (letters, dots, @, every special character,
    /// whitespace, a non-ASCII letter): the planner and admission give the same answer, and a
    /// valid address's person is valid and its own person.
    #[test]
    fn the_planner_and_admission_agree_on_any_string(
        pieces in prop::collection::vec(
            prop::sample::select(vec![
                "a", "B", "z9", "-", ".", "@", "+", "_", "x.com", "example.org", "%", "!",
                "\"", "(", ")", "<", ">", "[", "]", "\\", ":", ";", ",", " ", "\u{e4}", "'",
                "xn--", "1", "@a.b", "..",
            ]),
            1..12,
        )
    ) {
        thread_local! {
            static ADMISSION: Admission = Admission::new();
        }
        let address: String = pieces.concat();
        let planner = parse(&address);
        let admitted = ADMISSION.with(|a| a.admits(&address));
        prop_assert_eq!(planner.is_ok(), admitted, "{:?}: {:?}", address, planner);
        if let Ok(key) = planner {
            prop_assert_eq!(parse(&key), Ok(key.clone()));
            prop_assert!(same_person(&address, &key));
        }
    }

    #[test]
    fn same_person_is_equality_of_persons(a in "[ aAbB@.]{0,6}", b in "[ aAbB@.]{0,6}") {
        prop_assert_eq!(same_person(&a, &b), person(&a) == person(&b));
    }
}
