//! Email addresses: which spellings a `UserInvitation` may use, and when two addresses are the
//! same person.
//!
//! Both invite APIs compare addresses ignoring case, so `Alice@Example.com` and
//! `alice@example.com` are one person; `alice+ops@example.com` is another. [`person`] is the one
//! definition of "the same person": every place that compares addresses (the planner's requested
//! addresses, the holder index, the address claims, status entries, the clients' matching of the
//! APIs' answers) compares `person(a) == person(b)`.
//!
//! That definition is only sound when each mailbox has one spelling, so an address must be
//! plain: `local@domain`, ASCII, the local part a dot-atom of RFC 5322 `atext` without `%` and `!`
//! (old source routing), the domain two or more labels of letters, digits and inner hyphens, the
//! last starting with a letter. Refused, because they name one mailbox in another spelling
//! (`Alice <a@x.com>`, `<a@x.com>`, `a@x.com(c)`, `"a"@x.com`, `@relay:a@x.com`, `a%x.com@relay`,
//! `a\b@x.com`, ` a@x.com`, `a@x.com.`, `a..b@x.com`, `a@[10.0.0.1]`) or no mailbox on the
//! internet (`a@localhost`): display names, angle brackets, comments, quoted local parts, routes,
//! backslash escapes, whitespace, dots at either end of a part or two in a row, domain literals,
//! single-label domains, and non-ASCII characters (the APIs' case-insensitive comparison of
//! Unicode is not specified, and `exämple.com` and `xn--exmple-cua.com` are one domain: only the
//! ASCII `xn--` form is accepted, so ASCII lowercasing is exact case folding).
//!
//! The same rule is checked twice: at admission by the CRD ([`PATTERN`], the OpenAPI `pattern` of
//! `spec.users[].emailAddress` and `spec.orgInvitation.usernames[]`), and by the planner
//! ([`parse`], with a reason per form) for objects admitted before the rule, servers that do not
//! validate, and `reconcile -f`. A unit test holds the two to the same answers.
//!
//! A `pattern`, not a CEL `matches` rule: kube-apiserver validates the whole object on every
//! write, status writes included, and plans CEL programs afresh for each evaluation, compiling a
//! `matches` regex once per address per write (a tenth of the API server's CPU while the
//! controller wrote 10,000 statuses). An OpenAPI pattern is compiled once.

use schemars::Schema;

/// The RE2 pattern of a plain address (see the module docs). Written without backslashes, so it
/// reads the same in Rust, CEL and YAML.
macro_rules! plain_address {
    () => {
        "^[a-zA-Z0-9#$&'*+/=?^_`{|}~-]+([.][a-zA-Z0-9#$&'*+/=?^_`{|}~-]+)*@([a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?[.])+[a-zA-Z]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$"
    };
}

/// The pattern a plain address matches (RE2 and Rust `regex` syntax alike).
pub const PATTERN: &str = plain_address!();

/// The longest address (RFC 5321 path limit; the CRD's `maxLength`).
pub const MAX_LENGTH: usize = 254;

/// Sets the admission pattern on an address's schema (a schemars transform).
pub fn pattern(schema: &mut Schema) {
    schema.insert("pattern".into(), PATTERN.into());
}

/// Sets the admission pattern on the items of an array-of-addresses schema (a schemars
/// transform).
pub fn pattern_on_items(schema: &mut Schema) {
    if let Some(items) = schema.get_mut("items")
        && let Ok(items) = <&mut Schema>::try_from(items)
    {
        pattern(items);
    }
}

/// The person an address names, as the APIs compare addresses: ASCII case folded (and trimmed,
/// for the APIs' answers). Two addresses are the same person exactly when their `person` is
/// equal. For a plain address (see [`parse`]) this is exact case folding.
pub fn person(address: &str) -> String {
    address.trim().to_ascii_lowercase()
}

/// Whether two addresses (or identifiers) name the same person: see [`person`].
pub fn same_person(a: &str, b: &str) -> bool {
    a.trim().eq_ignore_ascii_case(b.trim())
}

/// A plain address's person ([`person`]), or why the address is refused (a sentence fragment:
/// "has a comment in parentheses").
pub fn parse(address: &str) -> Result<String, &'static str> {
    check(address)?;
    Ok(person(address))
}

/// Characters a plain address never has, each set with why it is refused (checked in order).
const FORBIDDEN: [(&str, &str); 8] = [
    ("<>", "has a display name or angle brackets"),
    ("()", "has a comment in parentheses"),
    ("\"", "has a quoted local part"),
    ("\\", "has a backslash escape"),
    (":", "has a route (@host:) or a group"),
    ("%!", "routes through another host (% or !)"),
    ("[]", "has a domain literal in brackets"),
    (",;", "lists more than one address"),
];

fn check(address: &str) -> Result<(), &'static str> {
    if address.is_empty() {
        return Err("is empty");
    }
    if address.len() > MAX_LENGTH {
        return Err("is longer than 254 characters");
    }
    if address.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("contains whitespace or a control character");
    }
    if !address.is_ascii() {
        return Err(
            "contains a non-ASCII character (write an internationalized domain in its ASCII xn-- form)",
        );
    }
    if let Some(&(_, why)) = FORBIDDEN
        .iter()
        .find(|(set, _)| address.chars().any(|c| set.contains(c)))
    {
        return Err(why);
    }
    let Some((local, domain)) = address.split_once('@') else {
        return Err("has no @");
    };
    if domain.contains('@') {
        return Err("has more than one @");
    }
    if local.is_empty() {
        return Err("has nothing before the @");
    }
    if local.split('.').any(str::is_empty) {
        return Err("has a dot at the start or end of the local part, or two dots in a row");
    }
    if !local.chars().all(|c| c == '.' || is_atext(c)) {
        return Err("has a character not allowed in the local part");
    }
    check_domain(domain)
}

/// RFC 5322 `atext` without `%` and `!` (source routing).
fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric() || "#$&'*+/=?^_`{|}~-".contains(c)
}

fn check_domain(domain: &str) -> Result<(), &'static str> {
    if domain.is_empty() {
        return Err("has nothing after the @");
    }
    if domain.ends_with('.') {
        return Err("has a domain ending with a dot (write it without the trailing dot)");
    }
    let labels: Vec<&str> = domain.split('.').collect();
    if labels.iter().any(|l| l.is_empty()) {
        return Err("has a domain starting with a dot or with two dots in a row");
    }
    if labels.len() < 2 {
        return Err("has a domain without a dot (a single-label domain reaches no mailbox)");
    }
    for label in &labels {
        if !label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err("has a domain with a character other than letters, digits and hyphens");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("has a domain label starting or ending with a hyphen");
        }
        if label.len() > 63 {
            return Err("has a domain label longer than 63 characters");
        }
    }
    if !labels[labels.len() - 1].starts_with(|c: char| c.is_ascii_alphabetic()) {
        return Err("has a top-level domain that does not start with a letter (an IP address?)");
    }
    Ok(())
}

#[cfg(test)]
mod tests;
