//! The pure half of V4 signing: canonical request and string to sign.
//!
//! Rules that the conformance vectors pin down (and that are easy to get
//! wrong):
//! - Everything outside RFC 3986 unreserved (`A-Z a-z 0-9 - . _ ~`) is
//!   percent-encoded with upper-case hex, UTF-8 first; in the path `/` is
//!   kept, so `/a//b` stays `/a//b` and `amper&sand` becomes `amper%26sand`.
//! - A bucket URL (empty object) is `/bucket` in path style, `/` otherwise.
//! - Header names are lower-cased, values trimmed and inner whitespace runs
//!   collapsed to one space; `host` is always signed, **without the port**
//!   (`localhost:8080` signs `host:localhost`).
//! - Query parameters, ours and the caller's, are sorted by encoded name; the
//!   URL's query is the canonical query with `X-Goog-Signature` appended.
//! - The payload hash is `UNSIGNED-PAYLOAD` unless the caller signs a
//!   `x-goog-content-sha256` header, whose value is then used.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use super::{SignError, SignedUrlRequest, UrlStyle, DEFAULT_HOST, MAX_EXPIRATION_SECS};

const ALGORITHM: &str = "GOOG4-RSA-SHA256";

/// Query parameters the signer sets itself; a caller's copy would be ambiguous.
const RESERVED_QUERY: [&str; 6] = [
    "x-goog-algorithm",
    "x-goog-credential",
    "x-goog-date",
    "x-goog-expires",
    "x-goog-signedheaders",
    "x-goog-signature",
];

/// A request turned into what is signed and what goes into the URL.
#[derive(Debug)]
pub(super) struct Prepared {
    /// `scheme://authority/path`, without the query.
    pub base_url: String,
    /// Sorted, encoded query, without `X-Goog-Signature`.
    pub canonical_query: String,
    pub canonical_request: String,
    /// `YYYYMMDDTHHMMSSZ`.
    pub datetime: String,
    /// `YYYYMMDD/auto/storage/goog4_request`.
    pub scope: String,
}

impl Prepared {
    pub fn string_to_sign(&self) -> String {
        let hash = hex::encode(Sha256::digest(self.canonical_request.as_bytes()));
        format!("{ALGORITHM}\n{}\n{}\n{hash}", self.datetime, self.scope)
    }
}

/// The canonical request Google rebuilds from the URL to check the signature
/// (exposed for tests and debugging of `SignatureDoesNotMatch`).
pub fn canonical_request(req: &SignedUrlRequest, client_email: &str) -> Result<String, SignError> {
    Ok(prepare(req, client_email)?.canonical_request)
}

/// The bytes the service account signs.
pub fn string_to_sign(req: &SignedUrlRequest, client_email: &str) -> Result<String, SignError> {
    Ok(prepare(req, client_email)?.string_to_sign())
}

pub(super) fn prepare(req: &SignedUrlRequest, client_email: &str) -> Result<Prepared, SignError> {
    let invalid = |msg: String| SignError::InvalidRequest(msg);

    if req.expiration_secs == 0 || req.expiration_secs > MAX_EXPIRATION_SECS {
        return Err(invalid(format!(
            "expiration must be between 1 and {MAX_EXPIRATION_SECS} seconds (7 days), not {}",
            req.expiration_secs
        )));
    }
    let method = req.method.trim().to_ascii_uppercase();
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(invalid(format!("\"{}\" is not an HTTP method", req.method)));
    }
    if client_email.is_empty() {
        return Err(invalid("the signer has no service-account email".into()));
    }

    // Scheme, authority and path.
    let (endpoint_scheme, authority, path) = match req.url_style {
        UrlStyle::PathStyle | UrlStyle::VirtualHostedStyle => {
            if req.bucket.is_empty() {
                return Err(invalid("the bucket name is empty".into()));
            }
            let (scheme, host) = split_endpoint(req.host.as_deref().unwrap_or(DEFAULT_HOST), "host")?;
            if req.url_style == UrlStyle::PathStyle {
                let mut path = format!("/{}", encode(&req.bucket, false));
                if !req.object.is_empty() {
                    path.push('/');
                    path.push_str(&encode(&req.object, true));
                }
                (scheme, host.to_owned(), path)
            } else {
                // The bucket becomes a DNS label here, so it is never encoded.
                if !req
                    .bucket
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
                {
                    return Err(invalid(format!(
                        "\"{}\" cannot be a virtual-hosted bucket name",
                        req.bucket
                    )));
                }
                (
                    scheme,
                    format!("{}.{host}", req.bucket),
                    format!("/{}", encode(&req.object, true)),
                )
            }
        }
        UrlStyle::BucketBoundHostname => {
            let hostname = req
                .bucket_bound_hostname
                .as_deref()
                .ok_or_else(|| invalid("the bucket-bound-hostname style needs bucket_bound_hostname".into()))?;
            let (scheme, host) = split_endpoint(hostname, "bucket_bound_hostname")?;
            (scheme, host.to_owned(), format!("/{}", encode(&req.object, true)))
        }
    };
    let scheme = endpoint_scheme.unwrap_or(req.scheme.as_str()).to_ascii_lowercase();
    if scheme != "https" && scheme != "http" {
        return Err(invalid(format!("scheme must be https or http, not \"{scheme}\"")));
    }

    // Headers: lower-case names, normalized values, repeated names joined
    // with commas; a BTreeMap keeps them sorted by name.
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in &req.headers {
        let name = name.trim().to_ascii_lowercase();
        if name.is_empty()
            || name
                .bytes()
                .any(|b| b == b':' || b.is_ascii_whitespace() || b.is_ascii_control())
        {
            return Err(invalid(format!("\"{name}\" is not a valid header name")));
        }
        if name == "host" {
            return Err(invalid(
                "do not pass a host header: it is derived from host, url_style and bucket_bound_hostname".into(),
            ));
        }
        let value = value.split_whitespace().collect::<Vec<_>>().join(" ");
        headers
            .entry(name)
            .and_modify(|v| {
                v.push(',');
                v.push_str(&value);
            })
            .or_insert(value);
    }
    headers.insert("host".to_owned(), strip_port(&authority).to_owned());
    let signed_headers = headers.keys().map(String::as_str).collect::<Vec<_>>().join(";");
    let canonical_headers: String = headers.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    let payload_hash = headers
        .get("x-goog-content-sha256")
        .map_or("UNSIGNED-PAYLOAD", String::as_str);

    // Query: ours plus the caller's, encoded, sorted by name (then value).
    let datetime = req.timestamp.format("%Y%m%dT%H%M%SZ").to_string();
    let scope = format!("{}/auto/storage/goog4_request", req.timestamp.format("%Y%m%d"));
    let mut query: Vec<(String, String)> = vec![
        ("X-Goog-Algorithm".into(), ALGORITHM.into()),
        (
            "X-Goog-Credential".into(),
            encode(&format!("{client_email}/{scope}"), false),
        ),
        ("X-Goog-Date".into(), datetime.clone()),
        ("X-Goog-Expires".into(), req.expiration_secs.to_string()),
        ("X-Goog-SignedHeaders".into(), encode(&signed_headers, false)),
    ];
    for (name, value) in &req.query_parameters {
        if RESERVED_QUERY.contains(&name.to_ascii_lowercase().as_str()) {
            return Err(invalid(format!(
                "query parameter \"{name}\" is set by the signer itself"
            )));
        }
        query.push((encode(name, false), encode(value, false)));
    }
    query.sort();
    let canonical_query = query
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");

    let canonical_request =
        format!("{method}\n{path}\n{canonical_query}\n{canonical_headers}\n{signed_headers}\n{payload_hash}");
    Ok(Prepared {
        base_url: format!("{scheme}://{authority}{path}"),
        canonical_query,
        canonical_request,
        datetime,
        scope,
    })
}

/// Percent-encodes everything but RFC 3986 unreserved characters (and `/`
/// when `keep_slash`), upper-case hex, as Google's canonical form wants.
pub(crate) fn encode(s: &str, keep_slash: bool) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 0x0f)] as char);
        }
    }
    out
}

/// Splits `http://host:port/` into (`Some("http")`, `host:port`); a bare
/// `host:port` has no scheme. Anything that is more than an authority is
/// refused, because it would silently end up in the signed host.
fn split_endpoint<'a>(value: &'a str, field: &str) -> Result<(Option<&'a str>, &'a str), SignError> {
    let value = value.trim();
    let (scheme, rest) = match value.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, value),
    };
    let authority = rest.trim_end_matches('/');
    if authority.is_empty()
        || authority
            .bytes()
            .any(|b| matches!(b, b'/' | b'?' | b'#' | b'@') || b.is_ascii_whitespace() || b.is_ascii_control())
    {
        return Err(SignError::InvalidRequest(format!(
            "{field} must be a host with an optional port and scheme (like storage.googleapis.com or http://127.0.0.1:4443), not \"{value}\""
        )));
    }
    Ok((scheme, authority))
}

/// The host without its port: what the vectors sign as the `host` header
/// (`localhost:8080` → `localhost`, `[::1]:4443` → `[::1]`).
fn strip_port(authority: &str) -> &str {
    if authority.starts_with('[') {
        return authority.find(']').map_or(authority, |end| &authority[..=end]);
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_like_google() {
        assert_eq!(
            encode("+&=();,*@$'!% ~é/x", true),
            "%2B%26%3D%28%29%3B%2C%2A%40%24%27%21%25%20~%C3%A9/x"
        );
        assert_eq!(encode("a/b", false), "a%2Fb");
        assert_eq!(encode("AZaz09-._~", false), "AZaz09-._~");
    }

    #[test]
    fn strips_ports_only() {
        assert_eq!(strip_port("localhost:8080"), "localhost");
        assert_eq!(strip_port("storage.googleapis.com"), "storage.googleapis.com");
        assert_eq!(strip_port("[::1]:4443"), "[::1]");
        assert_eq!(strip_port("127.0.0.1:4443"), "127.0.0.1");
    }

    #[test]
    fn splits_endpoints() {
        assert_eq!(
            split_endpoint("http://127.0.0.1:4443/", "host").unwrap(),
            (Some("http"), "127.0.0.1:4443")
        );
        assert_eq!(
            split_endpoint("localhost:8080", "host").unwrap(),
            (None, "localhost:8080")
        );
        assert!(split_endpoint("http://h/storage/v1", "host").is_err());
        assert!(split_endpoint("", "host").is_err());
    }
}
