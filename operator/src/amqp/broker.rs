//! A RabbitMQ broker as a BatchJob's Secret names it: its URL checked and
//! split, the management API's base derived, and the public form (without
//! credentials) everything outside the operator's memory shows.

use lapin::uri::AMQPUri;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};

/// A broker, from the URL in a BatchJob's Secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Broker {
    pub(super) uri: String,
    pub(super) public: String,
    pub(super) vhost: String,
    pub(super) user: String,
    pub(super) password: String,
    pub(super) management: String,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("public", &self.public)
            .field("management", &self.management)
            .finish_non_exhaustive()
    }
}

impl Broker {
    /// What tells this broker and its credentials apart from another's,
    /// without holding them: a digest of the URL (password included) and
    /// the management API's base. Two jobs share cached counts only when
    /// they reach the broker as the same user.
    pub fn identity(&self) -> String {
        use sha2::Digest;
        let digest = sha2::Sha256::new()
            .chain_update(self.uri.as_bytes())
            .chain_update([0])
            .chain_update(self.management.as_bytes())
            .finalize();
        digest[..16].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Checks `url` (`amqp[s]://user:password@host[:port][/vhost]`) and
    /// derives the management API's base, where the operator sends the
    /// URL's credentials: `from_secret` (the Secret's `managementUrl`, any
    /// host: whoever wrote the Secret chose where its password goes), else
    /// `from_spec` (the BatchJob's `managementUrl`, which must name the
    /// broker's own host: a BatchJob's author may not be allowed to read
    /// the Secret, and must not be able to send its password elsewhere),
    /// else `http://host:15672` (`https://host:15671` for `amqps`). The URL must
    /// be one the worker can append `/<queue>` to: no query string, no
    /// trailing slash, no surrounding white space (the pods read the
    /// Secret as it is). Messages never quote the URL: it holds a password.
    pub fn parse(
        url: &str,
        from_spec: Option<&str>,
        from_secret: Option<&str>,
    ) -> std::result::Result<Self, String> {
        const SHAPE: &str =
            "not an AMQP URL (expected amqp[s]://user:password@host[:port][/vhost])";
        if url != url.trim() {
            return Err("the URL has white space around it (a newline from --from-file?): the workers read the Secret as it is".into());
        }
        let parsed: AMQPUri = url.parse().map_err(|_| SHAPE.to_owned())?;
        if url.contains('?') {
            return Err(
                "query parameters are not supported: the workers append /<queue> to the URL".into(),
            );
        }
        if url.ends_with('/') {
            return Err("the URL ends with '/' (an empty vhost): name the vhost (%2f for the default) or leave the path out".into());
        }
        let uri: http::Uri = url.parse().map_err(|_| SHAPE.to_owned())?;
        let host = uri
            .host()
            .filter(|h| !h.is_empty())
            .ok_or("the URL names no host")?;
        let tls = url.starts_with("amqps://");
        let scheme = if tls { "amqps" } else { "amqp" };
        let port = uri.port_u16().unwrap_or(if tls { 5671 } else { 5672 });
        let vhost = parsed.vhost;
        let encoded_vhost = utf8_percent_encode(&vhost, NON_ALPHANUMERIC).to_string();
        let management = match (from_secret, from_spec) {
            (Some(base), _) => management_base(base, None)
                .map_err(|why| format!("managementUrl in the Secret: {why}"))?,
            (None, Some(base)) => management_base(base, Some(host))
                .map_err(|why| format!("spec managementUrl: {why}"))?,
            (None, None) if tls => format!("https://{host}:15671"),
            (None, None) => format!("http://{host}:15672"),
        };
        Ok(Self {
            uri: url.to_owned(),
            public: format!("{scheme}://{host}:{port}/{encoded_vhost}"),
            vhost,
            user: parsed.authority.userinfo.username,
            password: parsed.authority.userinfo.password,
            management,
        })
    }

    /// `amqp[s]://host:port/vhost`: the broker without credentials.
    pub fn public(&self) -> &str {
        &self.public
    }

    /// `amqp[s]://host:port/vhost/queue` without credentials (status).
    pub fn queue_url(&self, queue: &str) -> String {
        format!("{}/{}", self.public, encode_queue(queue))
    }

    /// The same broker (credentials, vhost, scheme) reached at `address`
    /// (`host:port`), e.g. the local end of a `kubectl port-forward` to a
    /// broker whose URL names a host only the cluster resolves. With
    /// `amqps` the certificate must name `host`.
    pub fn at(&self, address: &str) -> std::result::Result<Self, String> {
        let authority: http::uri::Authority = address
            .parse()
            .map_err(|_| format!("{address:?} is not host:port"))?;
        if authority.port_u16().is_none() || address.contains('@') || authority.host().is_empty() {
            return Err(format!("{address:?} is not host:port"));
        }
        let Some((scheme, rest)) = self.uri.split_once("://") else {
            return Err("the broker URL has no scheme".into());
        };
        let (current, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let userinfo = current.rsplit_once('@').map(|(user, _)| user);
        let uri = match userinfo {
            Some(user) => format!("{scheme}://{user}@{address}{path}"),
            None => format!("{scheme}://{address}{path}"),
        };
        let mut broker = Self::parse(&uri, None, Some(&self.management))?;
        broker.management.clone_from(&self.management);
        Ok(broker)
    }
}

/// `base` as a management API base URL: http or https, no credentials of
/// its own, on `broker_host` when given.
fn management_base(base: &str, broker_host: Option<&str>) -> std::result::Result<String, String> {
    // Never quoted: whoever wrote it may have put credentials in it.
    let uri: http::Uri = base.parse().map_err(|_| "it is not a URL".to_owned())?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err("it is not an http:// or https:// URL".into());
    }
    let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
    if authority.contains('@') {
        return Err("it must not hold credentials: the broker URL's are used".into());
    }
    let host = uri.host().unwrap_or_default();
    if let Some(broker) = broker_host
        && !host.eq_ignore_ascii_case(broker)
    {
        return Err(format!(
            "host {host:?} is not the broker's host {broker:?}: the broker's credentials are \
             only sent to its own host; a management API elsewhere goes in the Secret, under \
             the key managementUrl"
        ));
    }
    Ok(base.trim_end_matches('/').to_owned())
}

/// `queue` as the last segment of a worker's `--queue` URL.
pub fn encode_queue(queue: &str) -> String {
    const SEGMENT: &percent_encoding::AsciiSet = &NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    utf8_percent_encode(queue, SEGMENT).to_string()
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        reason = "test code: a panic is how a test reports failure"
    )]

    use super::*;

    #[test]
    fn a_spec_cannot_send_the_brokers_password_to_another_host() {
        for (management, why) in [
            ("https://collector.example:443", "is not the broker's host"),
            (
                "http://user:pw@rabbit.mq:15672",
                "must not hold credentials",
            ),
            ("ftp://rabbit.mq", "not an http:// or https:// URL"),
            (
                "ftp://admin:hunter2@rabbit.mq",
                "not an http:// or https:// URL",
            ),
            ("::hunter2::", "not a URL"),
        ] {
            let error =
                Broker::parse("amqp://u:hunter2@rabbit.mq/v", Some(management), None).unwrap_err();
            assert!(error.contains(why), "{management}: {error}");
            assert!(!error.contains("hunter2"), "the password leaked: {error}");
        }
    }

    #[test]
    fn a_broker_reached_through_another_address_keeps_its_credentials_and_vhost() {
        let broker = Broker::parse(
            "amqp://shoal:s%40cret@rabbitmq.jobs.svc:5672/media",
            None,
            None,
        )
        .unwrap();
        let local = broker.at("127.0.0.1:15999").unwrap();
        assert_eq!(local.public(), "amqp://127.0.0.1:15999/media");
        assert_eq!(local.uri, "amqp://shoal:s%40cret@127.0.0.1:15999/media");
        assert_eq!(
            (local.user.as_str(), local.password.as_str()),
            ("shoal", "s@cret")
        );
        assert_eq!(local.management, "http://rabbitmq.jobs.svc:15672");
        let no_vhost = Broker::parse("amqp://u:p@rabbit", None, None).unwrap();
        assert_eq!(
            no_vhost.at("localhost:5673").unwrap().uri,
            "amqp://u:p@localhost:5673"
        );
        for bad in [
            "127.0.0.1",
            "x@127.0.0.1:1",
            ":5672",
            "a b:1",
            "127.0.0.1:99999",
        ] {
            let error = broker.at(bad).unwrap_err();
            assert!(error.contains("is not host:port"), "{bad}: {error}");
            assert!(!error.contains("cret"), "the password leaked: {error}");
        }
    }

    #[test]
    fn broker_urls_keep_credentials_out_of_public_names() {
        let broker =
            Broker::parse("amqp://shoal:s%40cret@rabbit.mq:5673/media", None, None).unwrap();
        assert_eq!(broker.public(), "amqp://rabbit.mq:5673/media");
        assert_eq!(
            broker.queue_url("thumbs q"),
            "amqp://rabbit.mq:5673/media/thumbs%20q"
        );
        assert_eq!(broker.password, "s@cret");
        assert_eq!(broker.management, "http://rabbit.mq:15672");
        assert!(!format!("{broker:?}").contains("cret"));

        let default =
            Broker::parse("amqps://u:p@10.0.0.7", None, Some("https://mgmt:443/")).unwrap();
        assert_eq!(default.public(), "amqps://10.0.0.7:5671/%2F");
        assert_eq!(default.vhost, "/");
        assert_eq!(default.management, "https://mgmt:443");
        let same_host =
            Broker::parse("amqp://u:p@10.0.0.7", Some("http://10.0.0.7:8080/"), None).unwrap();
        assert_eq!(same_host.management, "http://10.0.0.7:8080");
        assert_eq!(
            Broker::parse("amqps://u:p@broker", None, None)
                .unwrap()
                .management,
            "https://broker:15671"
        );
    }

    #[test]
    fn broker_urls_the_workers_cannot_extend_are_refused() {
        for (url, why) in [
            ("https://u:hunter2@broker/jobs", "not an AMQP URL"),
            ("amqp:u:hunter2@broker", "not an AMQP URL"),
            ("amqp://u:hunter2@broker/%2f?heartbeat=10", "query"),
            ("amqp://u:hunter2@broker/", "ends with '/'"),
            ("amqp://u:hunter2@broker/%2f\n", "white space"),
        ] {
            let error = Broker::parse(url, None, None).unwrap_err();
            assert!(error.contains(why), "{url}: {error}");
            assert!(!error.contains("hunter2"), "the password leaked: {error}");
        }
    }

    proptest::proptest! {
        /// Whatever a Secret and a spec hold, the password never appears in
        /// an error, a public name or a Debug print, and a spec can only
        /// point the management API at the broker's own host.
        #[test]
        fn fuzz_broker_urls_never_leak_the_password(
            scheme in proptest::sample::select(vec!["amqp", "amqps", "http", "amqp:", ""]),
            user in "[a-z]{0,6}",
            secret in "[A-Za-z0-9]{1,12}",
            host in "[a-z0-9.-]{0,12}",
            port in proptest::option::of("[0-9]{1,6}"),
            path in "(/[a-z%0-9]{0,8}){0,3}[?/ ]?",
            spec in proptest::option::of("(https?|ftp)://([a-z]{1,3}@)?[a-z0-9.]{0,12}(:[0-9]{1,5})?/?"),
            from_secret in proptest::option::of("https?://[a-z0-9.]{1,12}(:[0-9]{1,5})?"),
        ) {
            let canary = format!("PW{secret}");
            let port = port.map(|p| format!(":{p}")).unwrap_or_default();
            let url = format!("{scheme}://{user}:{canary}@{host}{port}{path}");
            match Broker::parse(&url, spec.as_deref(), from_secret.as_deref()) {
                Err(why) => proptest::prop_assert!(!why.contains(&canary), "{}", why),
                Ok(broker) => {
                    proptest::prop_assert!(!broker.public().contains(&canary));
                    let debug = format!("{:?}", broker);
                    proptest::prop_assert!(!debug.contains(&canary));
                    proptest::prop_assert!(!broker.queue_url("q").contains(&canary));
                    if from_secret.is_none() {
                        let management: http::Uri = broker.management.parse().unwrap();
                        let broker_host = url.parse::<http::Uri>().unwrap();
                        proptest::prop_assert_eq!(
                            management.host().map(str::to_ascii_lowercase),
                            broker_host.host().map(str::to_ascii_lowercase)
                        );
                    }
                }
            }
        }
    }
}
