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
    // A string has at least as many bytes as characters.
    if s.len() > MAX_URL_CHARS {
        let chars = s.chars().count();
        if chars > MAX_URL_CHARS {
            return Err(UrlError::new(
                "url_too_long",
                format!("is {chars} characters long, the limit is {MAX_URL_CHARS}"),
            ));
        }
    }
    if plainly_public_http_url(s) {
        return Ok(());
    }
    match host_decides(s) {
        Some(host) => HOST_VERDICTS.with_borrow_mut(|verdicts| {
            if let Some(verdict) = verdicts.get(host) {
                return verdict.clone();
            }
            if verdicts.len() == HOST_VERDICTS_KEPT {
                verdicts.clear();
            }
            let verdict = check_parsed_url(s);
            verdicts.insert(host.to_owned(), verdict.clone());
            verdict
        }),
        None => check_parsed_url(s),
    }
}

/// Hosts a thread keeps the full check's verdict for ([`host_decides`]); a thread that meets
/// more starts over. With hosts of at most `MAX_KEPT_HOST_BYTES`, a thread keeps a few hundred
/// KiB at most, whatever the file.
const HOST_VERDICTS_KEPT: usize = 256;
/// A DNS name has at most 253 characters; a longer host is judged each time.
const MAX_KEPT_HOST_BYTES: usize = 253;

thread_local! {
    /// A source's URLs share a few hosts. When a host is outside the plain shape only because
    /// of a punycode label (`xn--`: the shop's name has an umlaut or is written in another
    /// script), the WHATWG parser's host check costs some twenty times the plain shape's, and
    /// every URL of the source paid it.
    static HOST_VERDICTS: std::cell::RefCell<std::collections::HashMap<String, Result<(), UrlError>>> =
        Default::default();
}

/// The host of `s` when the full check's verdict on `s` depends on that host alone: `http://`
/// or `https://` in lower case, then a non-empty host of lower-case letters, digits, dots and
/// hyphens, then nothing, or `/`, `?` or `#` and anything. No user info, port,
/// percent-encoding, upper case or backslash can change what the parser reads as that host
/// (a `\` would end it), both schemes read hosts alike, and after the host the parser fails on
/// nothing ([`plainly_public_http_url`]); so every URL with the host gets the host's verdict,
/// whose message names only the host. An empty host is not one: the parser skips a third `/`.
/// `None` as well for a host too long to keep.
fn host_decides(s: &str) -> Option<&str> {
    let rest = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))?;
    let host_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let host = &rest[..host_end];
    (!host.is_empty()
        && host.len() <= MAX_KEPT_HOST_BYTES
        && host
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.')))
    .then_some(host)
}

/// The rule on the WHATWG parser's reading of `s` (length already checked).
fn check_parsed_url(s: &str) -> Result<(), UrlError> {
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
        Some(Host::Ipv4(ip)) => ipv4_reason(ip).map(str::to_owned),
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

/// Whether `s` has the shape nearly every scraped URL has, which the full check below always
/// accepts: `http://` or `https://` in lower case, then a host of non-empty labels of lower-case
/// letters, digits and hyphens whose last label starts with a letter, then nothing, or `/`, `?`
/// or `#` and anything. Decided in one pass over the host, without the WHATWG parser, which was
/// half of a chunk's validation time.
///
/// Why the full check accepts every such string:
/// - no user info, port, percent-encoding, brackets, upper case or non-ASCII byte in the host,
///   so the parser's host is the written one and domain-to-ASCII leaves it as it is (no label
///   starts with `xn--`, the only ASCII labels it would decode and check);
/// - a last label that starts with a letter is neither decimal nor `0x` hexadecimal, so the
///   host is a domain, never an IPv4 address;
/// - the host is neither `localhost` nor under it;
/// - after the host, the parser percent-encodes what it must and fails on nothing.
fn plainly_public_http_url(s: &str) -> bool {
    let Some(rest) = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
    else {
        return false;
    };
    let bytes = rest.as_bytes();
    let plain_label = |label: &[u8]| !label.is_empty() && !label.starts_with(b"xn--");
    let mut label_start = 0;
    let mut host_end = bytes.len();
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'/' | b'?' | b'#' => {
                host_end = i;
                break;
            }
            b'.' => {
                if !plain_label(&bytes[label_start..i]) {
                    return false;
                }
                label_start = i + 1;
            }
            b'a'..=b'z' | b'0'..=b'9' | b'-' => {}
            _ => return false,
        }
    }
    let host = &rest[..host_end];
    plain_label(&bytes[label_start..host_end])
        && bytes[label_start].is_ascii_lowercase()
        && host != "localhost"
        && !host.ends_with(".localhost")
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

fn domain_reason(domain: &str) -> Option<String> {
    // The parser lower-cases special-scheme hosts; a trailing dot names the same host.
    let domain = domain.trim_end_matches('.');
    (domain == "localhost" || domain.ends_with(".localhost")).then(|| "localhost".to_owned())
}

/// Why an IPv4 address is not public, naming the range it is in.
fn ipv4_reason(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    Some(match (a, b) {
        _ if ip.is_unspecified() => "the unspecified address (0.0.0.0)",
        (0, _) => "a \"this network\" address (0.0.0.0/8)",
        (127, _) => "a loopback address (127.0.0.0/8)",
        (10, _) => "a private network address (10.0.0.0/8)",
        (172, 16..=31) => "a private network address (172.16.0.0/12)",
        (192, 168) => "a private network address (192.168.0.0/16)",
        (169, 254) => "a link-local address (169.254.0.0/16)",
        (100, 64..=127) => "a carrier-grade NAT address (100.64.0.0/10)",
        _ => return None,
    })
}

/// Why an IPv6 address is not public, naming the range it is in (for an address that embeds an
/// IPv4 address, that address's range and the embedding).
fn ipv6_reason(ip: Ipv6Addr) -> Option<String> {
    // `::` and `::1` also have the IPv4-compatible form; their IPv6 meaning comes first.
    let reason = if ip.is_unspecified() {
        "the unspecified address (::)"
    } else if ip.is_loopback() {
        "a loopback address (::1)"
    } else if let Some((v4, embedding)) = embedded_ipv4(ip) {
        return ipv4_reason(v4).map(|reason| format!("{reason}: {v4}, embedded in {embedding}"));
    } else if ip.is_unicast_link_local() {
        "a link-local address (fe80::/10)"
    } else if ip.is_unique_local() {
        "a unique-local (private) address (fc00::/7)"
    } else {
        return None;
    };
    Some(reason.to_owned())
}

/// The IPv4 address that an IPv6 address carries, for the forms that route to it, with the
/// form's name.
fn embedded_ipv4(ip: Ipv6Addr) -> Option<(Ipv4Addr, &'static str)> {
    let v4 = |high: u16, low: u16| Ipv4Addr::from((u32::from(high) << 16) | u32::from(low));
    match ip.segments() {
        [0, 0, 0, 0, 0, 0xffff, high, low] => {
            Some((v4(high, low), "an IPv4-mapped address (::ffff:0:0/96)"))
        }
        [0, 0, 0, 0, 0, 0, high, low] => {
            Some((v4(high, low), "an IPv4-compatible address (::/96)"))
        }
        [0x64, 0xff9b, 0, 0, 0, 0, high, low] => {
            Some((v4(high, low), "a NAT64 address (64:ff9b::/96)"))
        }
        // 6to4: the IPv4 address is bits 16..48.
        [0x2002, high, low, ..] => Some((v4(high, low), "a 6to4 address (2002::/16)")),
        _ => None,
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
            "http://1.0.0.0/",
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

    #[test]
    fn the_plain_shape_is_recognised_and_nothing_the_parser_reads_differently() {
        for plain in [
            "https://cdn.example.com/a.jpg",
            "http://shop.example",
            "https://a-b.c9.example?x=1",
            "https://shop.example#top",
            "https://shop.example/p/%ZZ\\ \t\u{e9}",
            "http://1.2.3.example/",
            "http://-a-.example/",
            "http://notlocalhost/",
        ] {
            assert!(plainly_public_http_url(plain), "{plain}");
            assert_eq!(check_parsed_url(plain), Ok(()), "{plain}");
        }
        for other in [
            "HTTPS://shop.example/",
            "https://Shop.example/",
            "https://shop.example:443/",
            "https://user@shop.example/",
            "https://shop..example/",
            "https://shop.example./",
            "https:///shop.example/",
            "https://shop.example\\p",
            "https://xn--bcher-kva.example/",
            "https://a.xn--p1ai/",
            "https://1.2.3.4/",
            "https://example.0x7f/",
            "https://localhost/",
            "https://a.localhost/",
            "https://sh%6Fp.example/",
            "https://shop.exam\tple/",
            "https://b\u{fc}cher.example/",
            "ftp://shop.example/",
        ] {
            assert!(!plainly_public_http_url(other), "{other}");
        }
    }

    #[test]
    fn urls_of_one_written_host_share_its_verdict_and_only_they() {
        // Each pair in order: the second may find the first's verdict kept.
        for (first, second) in [
            (
                "https://xn--bcher-kva.example/a",
                "http://xn--bcher-kva.example?b=1",
            ),
            ("https://xn--zz.example/a", "https://xn--zz.example#b"),
            ("https://1.2.3.4/a", "https://1.2.3.4"),
            ("https://127.0.0.1/a", "http://127.0.0.1/b"),
            // No host as written: the parser reads the host after the third `/`.
            ("https:///shop.example/", "https:///127.0.0.1/"),
            ("https:///127.0.0.1/", "https:///shop.example/"),
        ] {
            for url in [first, second] {
                assert_eq!(check_url(url), check_parsed_url(url), "{url}");
            }
        }
        assert_eq!(code("https:///127.0.0.1/"), Some("url_private_host"));
        assert_eq!(code("https://xn--zz.example/"), Some("url_invalid"));
        assert_eq!(code("https://xn--bcher-kva.example/"), None);
        let longest = format!("https://{}.example/", "a".repeat(MAX_KEPT_HOST_BYTES - 8));
        assert!(
            host_decides(&longest).is_some(),
            "a host of 253 bytes is kept"
        );
        let longer = format!("https://{}.example/", "a".repeat(MAX_KEPT_HOST_BYTES - 7));
        assert_eq!(
            host_decides(&longer),
            None,
            "a longer one is judged each time"
        );
    }

    proptest! {
        /// The shortcut never accepts what the full check refuses.
        #[test]
        fn the_plain_shape_is_always_accepted_by_the_full_check(
            s in "https?://(xn--|[a-z0-9\\-]{0,6}|0x|localhost|\\.){1,6}([/?#\\\\:@%\t].{0,8})?"
        ) {
            if plainly_public_http_url(&s) {
                prop_assert_eq!(check_parsed_url(&s), Ok(()), "{}", s);
            }
        }

        /// A host's kept verdict is the full check's for every URL with that host, whatever
        /// follows it and in whichever order the URLs come.
        #[test]
        fn a_kept_host_verdict_is_the_full_checks(
            urls in prop::collection::vec(
                "https?://(xn--|xn--bcher-kva|xn--zz|[a-z0-9\\-]{0,4}|0x|localhost|\\.){1,4}\
                 ([/?#\\\\:@%\t][a-z0-9/?#\\\\:@%\t.\\-]{0,8})?",
                1..12,
            )
        ) {
            for s in &urls {
                prop_assert_eq!(check_url(s), check_parsed_url(s), "{}", s);
            }
        }

        #[test]
        fn never_panics(s in "(https?://)?\\PC{0,60}") {
            let _ = check_url(&s);
        }

        #[test]
        fn every_private_ipv4_is_caught(ip in any::<u32>().prop_map(Ipv4Addr::from)) {
            let [a, b, ..] = ip.octets();
            let private = a == 0
                || a == 127
                || a == 10
                || (a == 172 && (16..32).contains(&b))
                || (a == 192 && b == 168)
                || (a == 169 && b == 254)
                || (a == 100 && (64..128).contains(&b));
            let expected = private.then_some("url_private_host");
            let [high, low] = [u32::from(ip) >> 16, u32::from(ip) & 0xffff];
            for url in [
                format!("http://{ip}/"),
                format!("http://{}/", u32::from(ip)),
                format!("http://0x{:x}/", u32::from(ip)),
                format!("http://0{:o}.0{:o}.{}/", a, b, u32::from(ip) & 0xffff),
                format!("http://[::ffff:{ip}]/"),
                format!("http://[::{ip}]/"),
                format!("http://[64:ff9b::{ip}]/"),
                format!("http://[2002:{high:x}:{low:x}::1]/"),
            ] {
                prop_assert_eq!(code(&url), expected, "{}", url);
            }
        }
    }

    fn private_host_message(url: &str) -> String {
        let err = check_url(url).unwrap_err();
        assert_eq!(err.code, "url_private_host", "{url}");
        err.message
    }

    fn assert_rule(range: &str, forbidden: &[&str], allowed: &[&str]) {
        for url in forbidden {
            let message = private_host_message(url);
            assert!(message.contains(range), "{url}: {message}");
        }
        for url in allowed {
            assert_eq!(check_url(url), Ok(()), "{url}");
        }
    }

    #[test]
    fn this_network_0_0_0_0_8() {
        assert_rule(
            "(0.0.0.0/8)",
            &[
                "http://0.1.2.3/",
                "http://0.255.255.255/",
                "http://0.0.0.1:8080/",
            ],
            &["http://1.0.0.0/", "http://1.2.3.4/"],
        );
        assert!(private_host_message("http://0.0.0.0/").contains("unspecified address (0.0.0.0)"));
    }

    #[test]
    fn carrier_grade_nat_100_64_0_0_10() {
        assert_rule(
            "carrier-grade NAT address (100.64.0.0/10)",
            &[
                "http://100.64.0.0/",
                "http://100.100.100.200/",
                "http://100.127.255.255/",
            ],
            &["http://100.63.255.255/", "http://100.128.0.0/"],
        );
    }

    #[test]
    fn ipv4_mapped_ipv6() {
        assert_rule(
            "IPv4-mapped address (::ffff:0:0/96)",
            &[
                "http://[::ffff:10.0.0.1]/",
                "http://[::ffff:7f00:1]/",
                "http://[::ffff:100.64.0.1]/",
                "http://[::ffff:0.0.0.0]/",
            ],
            &["http://[::ffff:8.8.8.8]/", "http://[::fffe:a00:1]/"],
        );
        let message = private_host_message("http://[::ffff:192.168.1.1]/");
        assert!(
            message.contains("(192.168.0.0/16): 192.168.1.1"),
            "{message}"
        );
    }

    #[test]
    fn ipv4_compatible_ipv6() {
        assert_rule(
            "IPv4-compatible address (::/96)",
            &[
                "http://[::127.0.0.1]/",
                "http://[::a00:1]/",
                "http://[::100.64.0.1]/",
                "http://[::0.0.0.2]/",
            ],
            &["http://[::8.8.8.8]/", "http://[1::a00:1]/"],
        );
        // `::` and `::1` are judged as IPv6 addresses.
        assert!(private_host_message("http://[::1]/").contains("loopback address (::1)"));
        assert!(private_host_message("http://[::]/").contains("unspecified address (::)"));
    }

    #[test]
    fn nat64_ipv6() {
        assert_rule(
            "NAT64 address (64:ff9b::/96)",
            &[
                "http://[64:ff9b::10.0.0.1]/",
                "http://[64:ff9b::7f00:1]/",
                "http://[64:ff9b::169.254.169.254]/",
            ],
            &["http://[64:ff9b::8.8.8.8]/", "http://[64:ff9a::a00:1]/"],
        );
    }

    #[test]
    fn six_to_four_ipv6() {
        assert_rule(
            "6to4 address (2002::/16)",
            &[
                "http://[2002:a00:1::]/",
                "http://[2002:7f00:1::1]/",
                "http://[2002:c0a8:101:5::ab]/",
                "http://[2002:6440:1::]/",
            ],
            &["http://[2002:808:808::1]/", "http://[2003:a00:1::]/"],
        );
        let message = private_host_message("http://[2002:a00:1::]/");
        assert!(message.contains("(10.0.0.0/8): 10.0.0.1"), "{message}");
    }

    /// The WHATWG parser (the `url` crate) turns decimal, octal and hex IPv4 forms, with fewer
    /// than four parts too, into the address they denote: the rule judges that address.
    #[test]
    fn numeric_ipv4_forms_are_judged_by_their_address() {
        for (written, denoted) in [
            ("2130706433", "127.0.0.1"),
            ("0x7f.1", "127.0.0.1"),
            ("0177.0.0.1", "127.0.0.1"),
            ("0x7f000001", "127.0.0.1"),
            ("0x0a.0.0.1", "10.0.0.1"),
            ("1681915905", "100.64.0.1"),
            ("0144.0100.1", "100.64.0.1"),
            ("0", "0.0.0.0"),
            ("0.1", "0.0.0.1"),
            ("134744072", "8.8.8.8"),
            ("010.0.0.1", "8.0.0.1"),
            ("0x8.0x8.0x8.0x8", "8.8.8.8"),
            ("100.0x40", "100.0.0.64"),
        ] {
            let url = Url::parse(&format!("http://{written}/")).unwrap();
            assert_eq!(url.host_str(), Some(denoted), "{written}");
        }
        assert_rule(
            "(127.0.0.0/8)",
            &["http://2130706433/", "http://0x7f.1/", "http://0177.0.0.1/"],
            &["http://134744072/", "http://0x8.0x8.0x8.0x8/"],
        );
        // Octal 010 is 8: public, while 10.0.0.1 is private.
        assert_rule(
            "(10.0.0.0/8)",
            &["http://0x0a.0.0.1/"],
            &["http://010.0.0.1/"],
        );
        assert_rule(
            "(100.64.0.0/10)",
            &["http://1681915905/", "http://0144.0100.1/"],
            &["http://100.0x40/"],
        );
        let message = private_host_message("http://0x7f.1/");
        assert!(message.contains("(host 127.0.0.1)"), "{message}");
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
            "http://0.1.2.3/",
            "http://100.64.0.1/",
            "http://[::10.0.0.1]/",
            "http://[64:ff9b::127.0.0.1]/",
            "http://[2002:a9fe:a9fe::]/",
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
