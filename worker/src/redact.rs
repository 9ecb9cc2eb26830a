//! Secrets kept out of what shoal prints: URLs are shown with their
//! password masked, and not at all when they do not parse (a password may
//! then sit anywhere in them).

/// `url` with the password of its user information replaced by `***`
/// (`amqp://app:***@rabbit/vhost/q`). A URL that does not parse as one is
/// replaced whole: where its password starts and ends cannot be known.
pub fn url(url: &str) -> String {
    const UNREADABLE: &str = "<a URL that does not parse, not shown: it may hold a password>";
    let Some((scheme, rest)) = url.split_once("://") else {
        return UNREADABLE.to_owned();
    };
    let valid_scheme = !scheme.is_empty()
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !valid_scheme {
        return UNREADABLE.to_owned();
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    // An '@' after the authority: a password with an unescaped '/' in it.
    if tail.contains('@') {
        return UNREADABLE.to_owned();
    }
    match authority.rsplit_once('@') {
        None => url.to_owned(),
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:***@{host}{tail}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::url;

    #[test]
    fn passwords_never_survive() {
        assert_eq!(
            url("amqp://app:s3cret@rabbit:5672/%2f/jobs"),
            "amqp://app:***@rabbit:5672/%2f/jobs"
        );
        assert_eq!(url("amqp://rabbit/v/q"), "amqp://rabbit/v/q");
        assert_eq!(
            url("https://sqs.eu-west-1.amazonaws.com/1/q"),
            "https://sqs.eu-west-1.amazonaws.com/1/q"
        );
        for hostile in [
            "amqp://app:pa/ss@rabbit/v/q",
            "app:s3cret@rabbit",
            "amqp//app:s3cret@rabbit",
            "am qp://app:s3cret@rabbit/v/q",
        ] {
            assert!(!url(hostile).contains("s3cret"), "{hostile}");
            assert!(!url(hostile).contains("ss@"), "{hostile}");
        }
    }

    proptest::proptest! {
        /// Whatever a URL looks like, a password in it is never shown.
        #[test]
        fn fuzz_a_password_never_survives_masking(
            scheme in "[a-z]{1,6}|[^:]{0,6}",
            user in "[a-z0-9]{0,8}",
            password in "[!-~]{1,24}",
            host in "[a-z0-9.:]{0,20}",
            tail in "([/?#][a-z0-9%/?#&=]{0,20})?",
            separator in proptest::sample::select(vec!["://", ":/", "//", "", ":///"]),
        ) {
            let canary = format!("PW{password}");
            let text = format!("{scheme}{separator}{user}:{canary}@{host}{tail}");
            let shown = url(&text);
            proptest::prop_assert!(!shown.contains(&canary), "{} shown as {}", text, shown);
        }
    }
}
