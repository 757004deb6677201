//! What a request must look like before anything else looks at it: the defences that
//! keep web pages from driving a collector through the browser of someone who can reach
//! it (cross-site request forgery, DNS rebinding). Checked in front of the API keys, on
//! every route but `/healthz`; a refusal is a 403 `FORBIDDEN` in Tracia's JSON naming
//! what was wrong, and nothing runs.
//!
//! - **Host.** The `Host` header must name the collector: when it serves on loopback,
//!   `localhost`, `127.0.0.1` or `[::1]` (with its port, or none); when it serves on
//!   another address, that IP (and the loopback names too when it is unspecified,
//!   `0.0.0.0` or `::`, since loopback then reaches it). Plus the names of
//!   [`Admission::new`]'s allowed hosts (`--allowed-host`). A page of a rebinding domain
//!   (`evil.example` resolving to 127.0.0.1) sends its own name, so it reads nothing.
//!   Without a `Host` (HTTP/1.0 clients; browsers always send one) the check passes.
//! - **State-changing requests** (any method but GET, HEAD and OPTIONS) must not come
//!   from another site: `Sec-Fetch-Site` must be `same-origin` or `none` when present,
//!   and `Origin`, when present, must be the collector's own (`http(s)://` + the `Host`).
//!   Another loopback port is *same-site* to a browser (ports do not count), so the
//!   UI's `SameSite=Strict` cookie alone would not stop it.
//! - **Body media type.** A state-changing request with a body (any POST, PUT or
//!   PATCH) must be `application/json`, which a page can only send cross-origin after a
//!   CORS preflight the collector never grants. The OTLP receiver (`/v1/traces`)
//!   checks its own media types (`application/x-protobuf`, `application/json`) and
//!   answers others 415, as OTLP specifies.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr as _;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::uri::Authority;
use axum::http::{HeaderMap, Method, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::rest::ApiError;

/// The names a loopback collector answers to.
const LOOPBACK_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "[::1]"];

/// The header browsers send to say where a request comes from.
const SEC_FETCH_SITE: &str = "sec-fetch-site";

/// Which `Host` names the collector answers to.
#[derive(Debug, Clone, Default)]
pub struct Admission {
    /// The address served; `None` (tests without a socket): loopback, any port.
    served: Option<SocketAddr>,
    /// `--allowed-host` entries, lowercase: `name` (any port) or `name:port`.
    allowed_hosts: Arc<[String]>,
}

impl Admission {
    /// The loopback names (any port, until [`Admission::served_at`] says which) plus
    /// `allowed_hosts` (`name` for any port, `name:port` for one); an error names an
    /// entry that is not a host.
    ///
    /// ```
    /// use tracia_collector::admission::Admission;
    /// let admission = Admission::new(["traces.internal", "ci:8080"]).unwrap();
    /// let admission = admission.served_at("127.0.0.1:4318".parse().unwrap());
    /// assert!(Admission::new(["http://traces.internal/"]).is_err());
    /// ```
    pub fn new<H: AsRef<str>>(allowed_hosts: impl IntoIterator<Item = H>) -> Result<Self, String> {
        let mut hosts = Vec::new();
        for host in allowed_hosts {
            let host = host.as_ref().trim();
            if host.is_empty() {
                continue;
            }
            if parse_host(host).is_none() {
                return Err(format!(
                    "invalid allowed host {host:?}: expected a host name or IP, optionally \
                     with :port (e.g. traces.internal or 10.0.0.5:4318)"
                ));
            }
            hosts.push(host.to_ascii_lowercase());
        }
        Ok(Self {
            served: None,
            allowed_hosts: hosts.into(),
        })
    }

    /// The same names for a collector served at `served` (the bound address, so that
    /// port 0 means the real port): its IP, and the loopback names on its port when it
    /// is loopback or unspecified.
    pub fn served_at(mut self, served: SocketAddr) -> Self {
        self.served = Some(served);
        self
    }

    /// Whether `Host: {host}[:{port}]` names this collector.
    fn admits_host(&self, host: &str, port: Option<u16>) -> bool {
        let allowed = self
            .allowed_hosts
            .iter()
            .any(|entry| match parse_host(entry) {
                Some((name, None)) => name == host,
                Some((name, Some(p))) => name == host && Some(p) == port,
                None => false,
            });
        let served_port = self.served.map(|s| s.port());
        let port_ok = port.is_none() || served_port.is_none() || port == served_port;
        let ip = self.served.map(|s| s.ip());
        let loopback_served = ip.is_none_or(|ip| ip.is_loopback() || ip.is_unspecified());
        let own_name = (loopback_served && LOOPBACK_NAMES.contains(&host))
            || ip.is_some_and(|ip| !ip.is_unspecified() && host == bracketed(ip));
        allowed || (own_name && port_ok)
    }
}

/// An IP as it appears in a `Host` header (`[...]` around IPv6).
fn bracketed(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

/// `name[:port]` (`name` lowercase, IPv6 in brackets); `None` if it is not a bare host.
fn parse_host(text: &str) -> Option<(String, Option<u16>)> {
    let authority = Authority::from_str(text).ok()?;
    if authority.host().is_empty() {
        return None;
    }
    // Nothing but the host and a numeric port (no `user@`, no `:x`).
    let rest = authority.as_str().strip_prefix(authority.host())?;
    if !rest.is_empty() && authority.port_u16().is_none_or(|p| rest != format!(":{p}")) {
        return None;
    }
    Some((authority.host().to_ascii_lowercase(), authority.port_u16()))
}

/// Whether `method` may change something.
fn changes_state(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The middleware: checks the `Host`, then, on state-changing requests, where it comes
/// from and what it carries (see the module docs).
pub async fn admit(State(admission): State<Admission>, request: Request, next: Next) -> Response {
    match check(
        &admission,
        request.method(),
        request.uri(),
        request.headers(),
    ) {
        Ok(()) => next.run(request).await,
        Err(message) => {
            tracing::warn!(
                "refused {} {}: {message}",
                request.method(),
                request.uri().path()
            );
            ApiError::forbidden(message).into_response()
        }
    }
}

/// Why a request may not pass, if it may not.
fn check(
    admission: &Admission,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<(), String> {
    if uri.path() == "/healthz" {
        // Probes send whatever address they dialled; the answer reveals nothing.
        return Ok(());
    }
    let host = match headers.get(header::HOST) {
        None => None,
        Some(value) => {
            let text = value.to_str().unwrap_or("");
            let parsed = parse_host(text)
                .filter(|(name, port)| admission.admits_host(name, *port))
                .ok_or_else(|| {
                    format!(
                        "Host {text:?} is not an address of this collector (DNS rebinding \
                         protection): use localhost or its IP, or allow the name with \
                         --allowed-host"
                    )
                })?;
            Some(parsed)
        }
    };
    if !changes_state(method) {
        return Ok(());
    }
    if let Some(site) = headers.get(SEC_FETCH_SITE) {
        let site = site.to_str().unwrap_or("");
        if !matches!(site, "same-origin" | "none") {
            return Err(format!(
                "Sec-Fetch-Site {site:?}: a page of another site may not change anything here"
            ));
        }
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let text = origin.to_str().unwrap_or("");
        if !same_origin(text, host.as_ref()) {
            return Err(format!(
                "Origin {text:?} is not this collector: a page of another origin may not \
                 change anything here"
            ));
        }
    }
    let otlp = uri.path() == "/v1/traces";
    let has_body = matches!(*method, Method::POST | Method::PUT | Method::PATCH)
        || headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .is_some_and(|l| l.as_bytes() != b"0");
    if has_body && !otlp {
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let media_type = content_type.split(';').next().unwrap_or("").trim();
        if !media_type.eq_ignore_ascii_case("application/json") {
            return Err(format!(
                "Content-Type {content_type:?}: a request body must be application/json"
            ));
        }
    }
    Ok(())
}

/// Whether `origin` is `http(s)://` + the request's `Host` (default ports implied).
fn same_origin(origin: &str, host: Option<&(String, Option<u16>)>) -> bool {
    let Some((host, port)) = host else {
        return false;
    };
    let Ok(uri) = Uri::from_str(origin) else {
        return false;
    };
    let default_port = match uri.scheme_str() {
        Some("http") => 80,
        Some("https") => 443,
        _ => return false,
    };
    let path_ok = matches!(uri.path(), "" | "/") && uri.query().is_none();
    uri.host().is_some_and(|h| h.eq_ignore_ascii_case(host))
        && uri.port_u16().unwrap_or(default_port) == port.unwrap_or(default_port)
        && path_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn served(addr: &str, allowed: &[&str]) -> Admission {
        Admission::new(allowed)
            .unwrap()
            .served_at(addr.parse().unwrap())
    }

    fn host_ok(admission: &Admission, host: &str) -> bool {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, host.parse().unwrap());
        check(admission, &Method::GET, &Uri::from_static("/"), &headers).is_ok()
    }

    #[test]
    fn loopback_answers_to_loopback_names_on_its_port() {
        let admission = served("127.0.0.1:4318", &[]);
        for host in [
            "localhost:4318",
            "127.0.0.1:4318",
            "[::1]:4318",
            "LOCALHOST",
            "127.0.0.1",
        ] {
            assert!(host_ok(&admission, host), "{host}");
        }
        for host in [
            "evil.example:4318",
            "evil.example",
            "localhost:4319",
            "127.0.0.2:4318",
            "user@localhost:4318",
            "localhost:x",
            "",
        ] {
            assert!(!host_ok(&admission, host), "{host}");
        }
    }

    #[test]
    fn allowed_hosts_and_bound_ips() {
        let admission = served("10.0.0.5:4318", &["traces.internal", "ci.internal:8080"]);
        for host in [
            "10.0.0.5:4318",
            "traces.internal",
            "traces.internal:443",
            "ci.internal:8080",
        ] {
            assert!(host_ok(&admission, host), "{host}");
        }
        for host in [
            "localhost:4318",
            "10.0.0.6:4318",
            "ci.internal:8081",
            "ci.internal",
        ] {
            assert!(!host_ok(&admission, host), "{host}");
        }
        let any = served("0.0.0.0:4318", &[]);
        assert!(host_ok(&any, "localhost:4318"));
        assert!(!host_ok(&any, "0.0.0.0:4318"));
        assert!(Admission::new(["a/b"]).is_err());
    }

    #[test]
    fn origins_must_be_the_host() {
        let host = ("localhost".to_owned(), Some(4318));
        assert!(same_origin("http://localhost:4318", Some(&host)));
        assert!(same_origin("https://LOCALHOST:4318", Some(&host)));
        for origin in [
            "http://localhost:4319",
            "http://evil.example:4318",
            "null",
            "file://",
            "",
        ] {
            assert!(!same_origin(origin, Some(&host)), "{origin}");
        }
        let default = ("traces.internal".to_owned(), None);
        assert!(same_origin("https://traces.internal", Some(&default)));
        assert!(!same_origin("https://traces.internal:8443", Some(&default)));
        assert!(!same_origin("http://localhost:4318", None));
    }
}
