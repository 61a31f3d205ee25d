//! Outbound HTTP: the shared client, the policy that decides which hosts a
//! pipeline may reach, and reading a response body under a size cap.
//!
//! The `http` tool sends requests whose URL a pipeline author chose, so it
//! must not become a way to reach the server's own network. Its client
//! resolves names through [`OutboundPolicy`], which drops loopback, private,
//! link-local and other non-public addresses unless the allow-list names the
//! host or a network that covers the address. Checking the addresses a name
//! really resolves to (not the name) closes DNS-rebinding tricks; URLs with a
//! literal IP and every redirect hop are checked before they are sent.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Once};
use std::time::Duration;

use ipnet::IpNet;
use tokio_util::sync::CancellationToken;

use crate::ErrorKind;
use crate::ToolError;

/// Installs the process-wide TLS crypto provider (ring) once.
pub fn install_tls_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Another part of the process may have installed one already: fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// A client builder with the server's defaults: user agent, connect timeout,
/// TLS roots from the platform.
pub fn client_builder() -> reqwest::ClientBuilder {
    install_tls_provider();
    reqwest::Client::builder()
        .user_agent(concat!("orchestrator/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(10))
}

/// The client for services the operator configured (search backends, tools
/// over HTTP, model providers). Their hosts are trusted, private ones too.
pub fn default_client() -> reqwest::Client {
    client_builder().build().unwrap_or_else(|e| {
        // Building only fails when the TLS backend cannot start at all.
        panic!("cannot build the HTTP client: {e}")
    })
}

/// One allow-list entry.
#[derive(Debug, Clone, PartialEq)]
enum HostRule {
    /// `api.example.com`: that host.
    Exact(String),
    /// `*.example.com`: any host below `example.com` (not itself).
    Below(String),
    /// `10.0.0.0/8` or `192.168.1.20`: addresses in that network.
    Net(IpNet),
}

/// Which hosts and addresses outbound requests may reach.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OutboundPolicy {
    rules: Vec<HostRule>,
    /// Reach non-public addresses without naming them.
    allow_private: bool,
}

impl OutboundPolicy {
    /// From allow-list entries: host names, `*.domain` wildcards, IP
    /// addresses and CIDR networks. An empty list allows every public host.
    pub fn new(entries: &[String], allow_private: bool) -> Result<Self, String> {
        let mut rules = Vec::new();
        for raw in entries {
            let entry = raw.trim().to_ascii_lowercase();
            let entry = entry.trim_start_matches('[').trim_end_matches(']');
            if entry.is_empty() {
                return Err("empty entry in the allow-list".into());
            }
            if let Ok(net) = entry.parse::<IpNet>() {
                rules.push(HostRule::Net(net));
            } else if let Ok(ip) = entry.parse::<IpAddr>() {
                rules.push(HostRule::Net(IpNet::from(ip)));
            } else if let Some(domain) = entry.strip_prefix("*.") {
                if !valid_host_name(domain) {
                    return Err(format!("'{raw}' is not a host name pattern"));
                }
                rules.push(HostRule::Below(domain.to_string()));
            } else if valid_host_name(entry) {
                rules.push(HostRule::Exact(entry.to_string()));
            } else {
                return Err(format!(
                    "'{raw}' is neither a host name, '*.domain', an IP address nor a CIDR network"
                ));
            }
        }
        Ok(OutboundPolicy {
            rules,
            allow_private,
        })
    }

    fn names_host(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.rules.iter().any(|r| match r {
            HostRule::Exact(h) => *h == host,
            HostRule::Below(d) => host
                .strip_suffix(d.as_str())
                .is_some_and(|rest| rest.ends_with('.')),
            HostRule::Net(_) => false,
        })
    }

    fn covers(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.rules.iter().any(|r| match r {
            HostRule::Net(n) => n.contains(&ip),
            _ => false,
        })
    }

    /// Whether a request to `host` may go to `ip`.
    pub fn allows(&self, host: &str, ip: IpAddr) -> Result<(), String> {
        let named = self.names_host(host);
        let covered = self.covers(ip);
        if !self.rules.is_empty() && !named && !covered {
            return Err(format!("host '{host}' is not in the allow-list"));
        }
        if !is_public(ip) && !self.allow_private && !covered && !named {
            return Err(format!(
                "'{host}' resolves to {ip}, a loopback, private or link-local address; \
                 add it to tools.http.allowed_hosts to reach it"
            ));
        }
        Ok(())
    }

    /// Checks a URL before it is sent: scheme, and a literal IP host. Names
    /// are checked again, address by address, when they are resolved.
    pub fn check_url(&self, url: &reqwest::Url) -> Result<(), String> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!(
                "scheme '{}' is not allowed (only http and https)",
                url.scheme()
            ));
        }
        match url.host() {
            None => Err("the URL has no host".into()),
            Some(url::Host::Ipv4(ip)) => self.allows(&ip.to_string(), IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => self.allows(&ip.to_string(), IpAddr::V6(ip)),
            Some(url::Host::Domain(name)) => {
                // With networks in the list, the resolved address decides.
                let has_nets = self.rules.iter().any(|r| matches!(r, HostRule::Net(_)));
                if !self.rules.is_empty() && !has_nets && !self.names_host(name) {
                    return Err(format!("host '{name}' is not in the allow-list"));
                }
                Ok(())
            }
        }
    }

    /// Checks a URL as [`check_url`](Self::check_url) does, and a host name
    /// by the addresses it resolves to now: refused when none may be
    /// reached (`localhost`, a name for a private address). A name that does
    /// not resolve passes; every connection is checked again anyway.
    pub async fn check_resolved(&self, url: &reqwest::Url) -> Result<(), String> {
        self.check_url(url)?;
        let Some(url::Host::Domain(name)) = url.host() else {
            return Ok(());
        };
        let port = url.port_or_known_default().unwrap_or(80);
        let lookup = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            tokio::net::lookup_host((name, port)),
        )
        .await;
        let Ok(Ok(found)) = lookup else {
            return Ok(());
        };
        let mut refused = None;
        for addr in found {
            match self.allows(name, addr.ip()) {
                Ok(()) => return Ok(()),
                Err(e) => refused = Some(e),
            }
        }
        refused.map_or(Ok(()), Err)
    }

    /// A client whose every connection obeys this policy, following up to
    /// `max_redirects` redirects, each checked like the first URL.
    /// With `max_redirects` 0, a redirect is the answer.
    pub fn client(self: &Arc<Self>, max_redirects: usize) -> reqwest::Client {
        let for_redirects = Arc::clone(self);
        let policy = if max_redirects == 0 {
            reqwest::redirect::Policy::none()
        } else {
            reqwest::redirect::Policy::custom(move |attempt| {
                if attempt.previous().len() > max_redirects {
                    return attempt.error(format!("more than {max_redirects} redirects"));
                }
                match for_redirects.check_url(attempt.url()) {
                    Ok(()) => attempt.follow(),
                    Err(e) => {
                        let to = attempt.url().to_string();
                        attempt.error(Refused(format!("redirect to {to} refused: {e}")))
                    }
                }
            })
        };
        client_builder()
            .no_proxy()
            .redirect(policy)
            .dns_resolver(Arc::new(GuardedResolver(Arc::clone(self))))
            .build()
            .unwrap_or_else(|e| panic!("cannot build the HTTP client: {e}"))
    }
}

fn valid_host_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
}

/// IPv4-mapped and IPv4-compatible IPv6 addresses are judged as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        // `::ffff:a.b.c.d`, and `::a.b.c.d` except `::` and `::1`.
        IpAddr::V6(v6) => match v6.to_ipv4_mapped().or_else(|| {
            (!v6.is_loopback() && !v6.is_unspecified())
                .then(|| v6.to_ipv4())
                .flatten()
        }) {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// Whether an address is on the public internet.
pub fn is_public(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        // Shared address space (carrier-grade NAT), 100.64.0.0/10.
        || (a == 100 && (64..128).contains(&b))
        // IETF protocol assignments, 192.0.0.0/24.
        || (a == 192 && b == 0 && c == 0)
        // Benchmarking, 198.18.0.0/15.
        || (a == 198 && (b == 18 || b == 19))
        // Reserved, 240.0.0.0/4.
        || a >= 240)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        // Unique local fc00::/7.
        || (first & 0xfe00) == 0xfc00
        // Link-local fe80::/10 and the deprecated site-local fec0::/10.
        || (first & 0xffc0) == 0xfe80
        || (first & 0xffc0) == 0xfec0
        // Documentation 2001:db8::/32.
        || (first == 0x2001 && ip.segments()[1] == 0x0db8)
        // NAT64 64:ff9b::/96 embeds IPv4: judge the embedded address.
        || (first == 0x0064 && ip.segments()[1] == 0xff9b && {
            let s = ip.segments();
            !is_public_v4(Ipv4Addr::new(
                (s[6] >> 8) as u8,
                s[6] as u8,
                (s[7] >> 8) as u8,
                s[7] as u8,
            ))
        }))
}

#[derive(Debug)]
struct GuardedResolver(Arc<OutboundPolicy>);

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = Arc::clone(&self.0);
        Box::pin(async move {
            let host = name.as_str().to_string();
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refused = None;
            let allowed: Vec<SocketAddr> = found
                .into_iter()
                .filter(|a| match policy.allows(&host, a.ip()) {
                    Ok(()) => true,
                    Err(e) => {
                        refused = Some(e);
                        false
                    }
                })
                .collect();
            if allowed.is_empty() {
                let why = refused.unwrap_or_else(|| format!("'{host}' has no addresses"));
                return Err(Box::new(Refused(why)) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// A connection the policy refused; found again in the error chain.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// The policy's refusal in a request error, if that is why it failed.
pub fn refusal(err: &reqwest::Error) -> Option<String> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if let Some(r) = e.downcast_ref::<Refused>() {
            return Some(r.0.clone());
        }
        source = e.source();
    }
    None
}

/// A request error in words, with its causes (reqwest's own message often
/// hides the interesting part, such as "connection refused").
pub fn describe(err: &reqwest::Error) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(e) = source {
        let part = e.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = e.source();
    }
    text
}

/// The first 300 characters of a body, for error messages.
pub fn excerpt(text: &str) -> String {
    let mut cut: String = text.chars().take(300).collect();
    if cut.len() < text.len() {
        cut.push('…');
    }
    cut
}

/// The step error for a 4xx/5xx answer: `HttpError` when trying again may
/// help (5xx, 408, 429), else `HttpClientError`.
pub fn status_error(status: reqwest::StatusCode, what: &str, body: &str) -> ToolError {
    let retryable = status.is_server_error()
        || status == reqwest::StatusCode::TOO_MANY_REQUESTS
        || status == reqwest::StatusCode::REQUEST_TIMEOUT;
    ToolError::new(
        if retryable {
            ErrorKind::HttpError
        } else {
            ErrorKind::HttpClientError
        },
        format!("{what} answered {status}: {}", excerpt(body)),
    )
}

/// The step error for a failed request.
pub fn request_error(err: &reqwest::Error, what: &str) -> ToolError {
    if let Some(why) = refusal(err) {
        return ToolError::new(ErrorKind::PermissionError, format!("{what} refused: {why}"));
    }
    if err.is_timeout() {
        return ToolError::new(ErrorKind::TimeoutError, format!("{what} timed out"));
    }
    if err.is_builder() {
        return ToolError::invalid(format!("{what}: {}", describe(err)));
    }
    ToolError::new(
        ErrorKind::ConnectionError,
        format!("{what} failed: {}", describe(err)),
    )
}

/// The next chunk of a response body (`None` at its end), or an error
/// once `cancel` fires.
pub(crate) async fn next_chunk(
    response: &mut reqwest::Response,
    cancel: &CancellationToken,
    what: &str,
) -> Result<Option<impl std::ops::Deref<Target = [u8]> + use<>>, ToolError> {
    tokio::select! {
        c = response.chunk() => c.map_err(|e| request_error(&e, what)),
        _ = cancel.cancelled() => {
            Err(ToolError::new(ErrorKind::CancelledError, format!("{what} was cancelled")))
        }
    }
}

/// Reads a response body, failing once it grows past `max` bytes, and
/// stopping when `cancel` fires.
pub async fn read_capped(
    mut response: reqwest::Response,
    max: usize,
    cancel: &CancellationToken,
    what: &str,
) -> Result<Vec<u8>, ToolError> {
    if let Some(len) = response.content_length()
        && len > max as u64
    {
        return Err(ToolError::new(
            ErrorKind::ResponseTooLargeError,
            format!("{what}: the response has {len} bytes, more than the limit of {max}"),
        ));
    }
    let mut body = Vec::new();
    loop {
        let Some(chunk) = next_chunk(&mut response, cancel, what).await? else {
            break;
        };
        if body.len() + chunk.len() > max {
            return Err(ToolError::new(
                ErrorKind::ResponseTooLargeError,
                format!("{what}: the response is larger than the limit of {max} bytes"),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn non_public_addresses_are_recognised() {
        for a in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            // IPv4-compatible: judged as the IPv4 address it holds.
            "::127.0.0.1",
            "::10.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "255.255.255.255",
            "224.0.0.1",
        ] {
            assert!(!is_public(ip(a)), "{a} must not be public");
        }
        for a in [
            "93.184.216.34",
            "1.1.1.1",
            "2606:4700::1111",
            "64:ff9b::101:101",
        ] {
            assert!(is_public(ip(a)), "{a} is public");
        }
    }

    #[test]
    fn an_empty_list_allows_public_hosts_only() {
        let p = OutboundPolicy::new(&[], false).expect("policy");
        assert!(p.allows("example.com", ip("93.184.216.34")).is_ok());
        let err = p
            .allows("localhost", ip("127.0.0.1"))
            .expect_err("loopback");
        assert!(err.contains("loopback"), "{err}");
        assert!(p.allows("metadata", ip("169.254.169.254")).is_err());
        let open = OutboundPolicy::new(&[], true).expect("policy");
        assert!(open.allows("localhost", ip("127.0.0.1")).is_ok());
    }

    #[test]
    fn entries_name_hosts_wildcards_and_networks() {
        let p = OutboundPolicy::new(
            &[
                "api.example.com".into(),
                "*.internal.test".into(),
                "10.0.0.0/8".into(),
                "[::1]".into(),
            ],
            false,
        )
        .expect("policy");
        assert!(p.allows("api.example.com", ip("93.184.216.34")).is_ok());
        assert!(p.allows("API.example.com.", ip("93.184.216.34")).is_ok());
        assert!(p.allows("other.example.com", ip("93.184.216.34")).is_err());
        assert!(p.allows("a.internal.test", ip("192.168.0.9")).is_ok());
        assert!(p.allows("internal.test", ip("192.168.0.9")).is_err());
        assert!(p.allows("evilinternal.test", ip("1.2.3.4")).is_err());
        assert!(p.allows("db", ip("10.2.3.4")).is_ok());
        assert!(p.allows("db", ip("11.2.3.4")).is_err());
        assert!(p.allows("::1", ip("::1")).is_ok());
        for bad in ["", "http://x", "a b", "*."] {
            assert!(
                OutboundPolicy::new(&[bad.to_string()], false).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn urls_are_checked_before_sending() {
        let p = Arc::new(OutboundPolicy::new(&[], false).expect("policy"));
        let url = |s: &str| reqwest::Url::parse(s).expect("url");
        assert!(p.check_url(&url("file:///etc/passwd")).is_err());
        assert!(p.check_url(&url("http://127.0.0.1:8080/")).is_err());
        assert!(p.check_url(&url("http://[::ffff:7f00:1]/")).is_err());
        assert!(p.check_url(&url("http://[::127.0.0.1]/")).is_err());
        assert!(
            p.check_url(&url("http://2130706433/")).is_err(),
            "decimal IPv4 is parsed as 127.0.0.1"
        );
        assert!(p.check_url(&url("https://example.com/")).is_ok());
    }
}
