//! Who may talk to the dashboard: the access token (URL once, then a cookie), the
//! Host header (DNS rebinding), the CSRF token and Origin of state-changing requests.

use std::io::Read;

use hyper::HeaderMap;
use hyper::header::{COOKIE, HOST, ORIGIN};

/// The header a state-changing request carries the CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// This process's secrets: what the URL carries and what the page sends back.
#[derive(Clone)]
pub struct Tokens {
    port: u16,
    access: String,
    csrf: String,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

/// Why a request is refused before it reaches a route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No valid access token (cookie or `?token=`): 401.
    Unauthenticated,
    /// The Host header is not this loopback port: 421 (a rebinding page, or a proxy).
    WrongHost,
    /// A state-changing request without the CSRF token, or from another origin: 403.
    Forbidden,
}

impl Tokens {
    /// Fresh tokens for a dashboard on `port`: 32 random bytes each, hex.
    pub fn generate(port: u16) -> std::io::Result<Self> {
        Ok(Self {
            port,
            access: random_hex(32)?,
            csrf: random_hex(32)?,
        })
    }

    /// Fixed tokens (tests).
    #[cfg(test)]
    pub fn fixed(port: u16, access: &str, csrf: &str) -> Self {
        Self {
            port,
            access: access.to_owned(),
            csrf: csrf.to_owned(),
        }
    }

    /// The port the dashboard listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The access token (goes into the URL printed once).
    pub fn access(&self) -> &str {
        &self.access
    }

    /// The CSRF token (goes into the page).
    pub fn csrf(&self) -> &str {
        &self.csrf
    }

    /// The cookie's name: per port, since cookies do not tell ports apart.
    pub fn cookie_name(&self) -> String {
        format!("bottle_dashboard_{}", self.port)
    }

    /// The `Set-Cookie` value of a successful first visit.
    pub fn set_cookie(&self) -> String {
        format!(
            "{}={}; HttpOnly; SameSite=Strict; Path=/",
            self.cookie_name(),
            self.access
        )
    }

    /// Whether `headers` name this loopback port as the host.
    pub fn host_ok(&self, headers: &HeaderMap) -> bool {
        let Some(host) = headers.get(HOST).and_then(|h| h.to_str().ok()) else {
            return false;
        };
        host == format!("127.0.0.1:{}", self.port) || host == format!("localhost:{}", self.port)
    }

    /// Whether the request carries the access token: the cookie, or `query_token`.
    pub fn authenticated(&self, headers: &HeaderMap, query_token: Option<&str>) -> bool {
        if query_token.is_some_and(|t| constant_time_eq(t.as_bytes(), self.access.as_bytes())) {
            return true;
        }
        let name = self.cookie_name();
        headers
            .get_all(COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .any(|(k, v)| k == name && constant_time_eq(v.as_bytes(), self.access.as_bytes()))
    }

    /// Whether a state-changing request may go on: the CSRF header matches and the
    /// Origin, when sent, is this dashboard.
    pub fn csrf_ok(&self, headers: &HeaderMap) -> bool {
        let token = headers.get(CSRF_HEADER).map(|v| v.as_bytes());
        if !token.is_some_and(|t| constant_time_eq(t, self.csrf.as_bytes())) {
            return false;
        }
        match headers.get(ORIGIN) {
            None => true,
            Some(origin) => origin.to_str().is_ok_and(|o| {
                o == format!("http://127.0.0.1:{}", self.port)
                    || o == format!("http://localhost:{}", self.port)
            }),
        }
    }

    /// The check a state-changing request passes after [`Tokens::check`].
    pub fn check_post(&self, headers: &HeaderMap) -> Result<(), Refusal> {
        if self.csrf_ok(headers) {
            Ok(())
        } else {
            Err(Refusal::Forbidden)
        }
    }

    /// The checks every request passes, in order: host, then token.
    pub fn check(&self, headers: &HeaderMap, query_token: Option<&str>) -> Result<(), Refusal> {
        if !self.host_ok(headers) {
            return Err(Refusal::WrongHost);
        }
        if !self.authenticated(headers, query_token) {
            return Err(Refusal::Unauthenticated);
        }
        Ok(())
    }
}

/// Equality whose time depends on the lengths only, not on where the bytes differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn random_hex(bytes: usize) -> std::io::Result<String> {
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(hex::encode(buf))
}

/// The value of `name` in a query string (`a=1&token=x`), undecoded: tokens are hex.
pub fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(
                hyper::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        map
    }

    #[test]
    fn tokens_are_long_random_hex_and_differ() {
        let a = Tokens::generate(1).unwrap();
        let b = Tokens::generate(1).unwrap();
        assert_eq!(a.access().len(), 64);
        assert!(a.access().bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a.access(), b.access());
        assert_ne!(a.access(), a.csrf());
        assert!(!format!("{a:?}").contains(a.access()));
    }

    #[test]
    fn constant_time_eq_compares() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }

    #[test]
    fn host_cookie_csrf_and_origin() {
        let t = Tokens::fixed(8000, "aa", "cc");
        assert!(t.host_ok(&headers(&[("host", "127.0.0.1:8000")])));
        assert!(t.host_ok(&headers(&[("host", "localhost:8000")])));
        assert!(!t.host_ok(&headers(&[("host", "evil.example:8000")])));
        assert!(!t.host_ok(&headers(&[("host", "127.0.0.1:8001")])));
        assert!(!t.host_ok(&headers(&[])));
        assert!(t.authenticated(
            &headers(&[("cookie", "x=1; bottle_dashboard_8000=aa")]),
            None
        ));
        assert!(!t.authenticated(&headers(&[("cookie", "bottle_dashboard_8001=aa")]), None));
        assert!(t.authenticated(&headers(&[]), Some("aa")));
        assert!(!t.authenticated(&headers(&[]), Some("ab")));
        assert!(t.csrf_ok(&headers(&[("x-csrf-token", "cc")])));
        assert!(t.csrf_ok(&headers(&[
            ("x-csrf-token", "cc"),
            ("origin", "http://localhost:8000")
        ])));
        assert!(!t.csrf_ok(&headers(&[
            ("x-csrf-token", "cc"),
            ("origin", "http://evil.example")
        ])));
        assert!(!t.csrf_ok(&headers(&[("x-csrf-token", "cd")])));
        assert!(!t.csrf_ok(&headers(&[])));
    }

    #[test]
    fn query_params() {
        assert_eq!(query_param(Some("a=1&token=xy"), "token"), Some("xy"));
        assert_eq!(query_param(Some("tokens=xy"), "token"), None);
        assert_eq!(query_param(None, "token"), None);
    }
}
