//! The contract's URL rule, shared by `product_url` and every entry of `image_urls`.
//!
//! This is purely a string check. Names are never resolved: resolving them would itself be the SSRF
//! vector the rule guards against, and would make validation depend on the network.

use std::net::{Ipv4Addr, Ipv6Addr};

use url::{Host, Url};

/// Longest accepted URL, counted in characters.
const MAX_URL_CHARS: usize = 2_048;

/// Why a string failed the URL rule. `code` is one of the contract's failure codes; `message`
/// explains the failure without repeating the whole URL (the caller adds field and value).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct UrlError {
    pub code: &'static str,
    pub message: String,
}

impl UrlError {
    fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// Checks `s` (already trimmed) against the contract's URL rule.
pub fn check_url(s: &str) -> Result<(), UrlError> {
    let chars = s.chars().count();
    if chars > MAX_URL_CHARS {
        return Err(UrlError::new(
            "url_too_long",
            format!("is {chars} characters long, the limit is {MAX_URL_CHARS}"),
        ));
    }
    let url = Url::parse(s).map_err(|e| match e {
        url::ParseError::RelativeUrlWithoutBase => UrlError::new(
            "url_invalid",
            "is not an absolute URL (expected something like https://shop.example/item)",
        ),
        other => UrlError::new("url_invalid", format!("is not a valid URL ({other})")),
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(UrlError::new(
            "url_scheme",
            format!(
                "uses scheme \"{}\"; only http and https are allowed",
                url.scheme()
            ),
        ));
    }
    // The parser has already turned an internationalised host into punycode, so the host has to be
    // judged as it was written.
    if written_host_is_non_ascii(s) {
        return Err(UrlError::new(
            "url_non_ascii_host",
            "has a non-ASCII host name; write it in punycode (xn--…) instead",
        ));
    }
    let reason = match url.host() {
        None => return Err(UrlError::new("url_invalid", "has no host")),
        Some(Host::Domain(domain)) => domain_reason(domain),
        Some(Host::Ipv4(ip)) => ipv4_reason(ip),
        Some(Host::Ipv6(ip)) => ipv6_reason(ip),
    };
    match reason {
        Some(reason) => Err(UrlError::new(
            "url_private_host",
            format!(
                "points to {reason} (host {}); only public hosts are allowed",
                url.host_str().unwrap_or_default()
            ),
        )),
        None => Ok(()),
    }
}

/// Whether the authority's host, as written in `s`, holds anything beyond ASCII, including
/// percent-encoded non-ASCII bytes (the parser decodes those before converting to punycode).
///
/// Only called after `s` parsed as an http(s) URL, so the WHATWG special-scheme shape applies: the
/// authority follows the scheme and any run of `/` or `\`, and ends at the first `/`, `\`, `?` or
/// `#`; user info ends at its last `@`.
fn written_host_is_non_ascii(s: &str) -> bool {
    let Some((_, rest)) = s.split_once(':') else {
        return false;
    };
    let rest = rest.trim_start_matches(['/', '\\']);
    let authority = rest
        .find(['/', '\\', '?', '#'])
        .map_or(rest, |end| &rest[..end]);
    let host_and_port = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    !host_and_port.is_ascii() || percent_decodes_to_non_ascii(host_and_port.as_bytes())
}

fn percent_decodes_to_non_ascii(s: &[u8]) -> bool {
    s.windows(3).any(|w| {
        w[0] == b'%' && matches!((hex_value(w[1]), hex_value(w[2])), (Some(hi), Some(_)) if hi >= 8)
    })
}

fn hex_value(b: u8) -> Option<u8> {
    char::from(b)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

fn domain_reason(domain: &str) -> Option<&'static str> {
    // The parser lower-cases special-scheme hosts; a trailing dot names the same host.
    let domain = domain.trim_end_matches('.');
    (domain == "localhost" || domain.ends_with(".localhost")).then_some("localhost")
}

fn ipv4_reason(ip: Ipv4Addr) -> Option<&'static str> {
    if ip.is_loopback() {
        Some("a loopback address")
    } else if ip.is_unspecified() {
        Some("the unspecified address")
    } else if ip.is_private() {
        Some("a private network address")
    } else if ip.is_link_local() {
        Some("a link-local address")
    } else {
        None
    }
}

fn ipv6_reason(ip: Ipv6Addr) -> Option<&'static str> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return ipv4_reason(v4);
    }
    if ip.is_loopback() {
        Some("a loopback address")
    } else if ip.is_unspecified() {
        Some("the unspecified address")
    } else if ip.is_unicast_link_local() {
        Some("a link-local address")
    } else if ip.is_unique_local() {
        Some("a unique-local (private) address")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn code(s: &str) -> Option<&'static str> {
        check_url(s).err().map(|e| e.code)
    }

    #[test]
    fn accepts_ordinary_public_urls() {
        for ok in [
            "https://shop.example.com/p/123?variant=4#top",
            "http://shop.example.com",
            "HTTPS://Shop.Example.COM/p",
            "https://user:pw@cdn.example.com:8443/a.jpg",
            "http://xn--bcher-kva.example/",
            "http://93.184.216.34/",
            "http://[2606:2800:220:1:248:1893:25c8:1946]/",
            "http://172.32.0.1/",
            "http://192.169.0.1/",
            "http://0.1.2.3/",
            "http://notlocalhost/",
            "http://localhost.example.com/",
        ] {
            assert_eq!(check_url(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn url_invalid() {
        for bad in [
            "shop.example.com/p/1",
            "/p/1",
            "not a url",
            "http://",
            "https://shop.example.com:99999/",
            "http://[::1/",
        ] {
            assert_eq!(code(bad), Some("url_invalid"), "{bad}");
        }
        let message = check_url("shop.example.com/p/1").unwrap_err().message;
        assert!(message.contains("absolute"), "{message}");
    }

    #[test]
    fn url_scheme() {
        for bad in [
            "ftp://shop.example.com/a",
            "javascript:alert(1)",
            "mailto:someone@example.com",
            "file:///etc/passwd",
            "data:image/png;base64,AAAA",
            "localhost:8080/admin",
        ] {
            assert_eq!(code(bad), Some("url_scheme"), "{bad}");
        }
        assert!(
            check_url("ftp://x.example/")
                .unwrap_err()
                .message
                .contains("\"ftp\"")
        );
    }

    #[test]
    fn url_too_long_edges() {
        let base = "https://shop.example.com/";
        let exact = format!("{base}{}", "a".repeat(MAX_URL_CHARS - base.len()));
        assert_eq!(exact.chars().count(), 2_048);
        assert_eq!(check_url(&exact), Ok(()));
        let over = format!("{exact}a");
        assert_eq!(code(&over), Some("url_too_long"));
        // Characters, not bytes: 2,048 characters of which some are multibyte still pass.
        let multibyte = format!("{base}{}", "é".repeat(MAX_URL_CHARS - base.len()));
        assert!(multibyte.len() > 2_048);
        assert_eq!(check_url(&multibyte), Ok(()));
    }

    #[test]
    fn url_non_ascii_host() {
        for bad in [
            "http://bücher.example/",
            "https://例え.テスト/",
            "https://user@bücher.example:8080/x",
            "https://ｅxample.com/",
            "http://b%C3%BCcher.example/",
        ] {
            assert_eq!(code(bad), Some("url_non_ascii_host"), "{bad}");
        }
        // Non-ASCII outside the host is not the host's problem.
        for ok in [
            "https://shop.example.com/bücher?q=日本",
            "https://bücher@shop.example.com/",
            "https://shop.example.com/a%20b",
        ] {
            assert_eq!(check_url(ok), Ok(()), "{ok}");
        }
    }

    proptest! {
        #[test]
        fn never_panics(s in "(https?://)?\\PC{0,60}") {
            let _ = check_url(&s);
        }

        #[test]
        fn every_private_ipv4_is_caught(ip in any::<u32>().prop_map(Ipv4Addr::from)) {
            let [a, b, ..] = ip.octets();
            let private = a == 127
                || a == 10
                || (a == 172 && (16..32).contains(&b))
                || (a == 192 && b == 168)
                || (a == 169 && b == 254)
                || ip == Ipv4Addr::UNSPECIFIED;
            let expected = private.then_some("url_private_host");
            prop_assert_eq!(code(&format!("http://{ip}/")), expected);
            prop_assert_eq!(code(&format!("http://[::ffff:{ip}]/")), expected);
            prop_assert_eq!(code(&format!("http://{}/", u32::from(ip))), expected);
        }
    }

    #[test]
    fn url_private_host() {
        for bad in [
            "http://localhost/",
            "http://LOCALHOST:8080/",
            "http://localhost./",
            "http://api.localhost/",
            "http://127.0.0.1/",
            "http://127.255.1.2:9000/",
            "http://0.0.0.0/",
            "http://10.1.2.3/",
            "http://172.16.0.1/",
            "http://172.31.255.255/",
            "http://192.168.1.1/",
            "http://169.254.169.254/latest/meta-data/",
            "http://[::1]/",
            "http://[::]/",
            "http://[fe80::1]/",
            "http://[febf::1]/",
            "http://[fd00::1]/",
            "http://[fc00::1]/",
            "http://[::ffff:10.0.0.1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:169.254.169.254]/",
            // Numeric shortcuts that the WHATWG parser normalises to private addresses.
            "http://2130706433/",
            "http://0x7f.1/",
            "http://0177.0.0.1/",
            "http://127.1/",
            "http://0x0a000001/",
            "http://127.0.0.1./",
        ] {
            assert_eq!(code(bad), Some("url_private_host"), "{bad}");
        }
        let message = check_url("http://0x7f.1/").unwrap_err().message;
        assert!(message.contains("127.0.0.1"), "{message}");
    }
}
