//! Who may use the collector, and how fast: API keys and a rate limit, checked in front
//! of every route but `/healthz`.
//!
//! - **API keys.** Once any is configured, every request needs `Authorization: Bearer
//!   <key>`, or (for the UI in a browser) the `tracia_key` cookie that visiting any
//!   page with `?key=<key>` once sets (`HttpOnly`, `SameSite=Strict`). Keys are compared
//!   in constant time. A refusal is 401: Tracia's JSON under `/api`, plain text elsewhere.
//! - **Rate limit.** One token bucket for the whole collector (it protects the store,
//!   not one client from another): N requests a second, bursts up to N. Beyond it,
//!   429 with `Retry-After`.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::time::Instant;

use crate::AppState;
use crate::rest::ApiError;

/// The cookie that carries a key for the UI.
pub const KEY_COOKIE: &str = "tracia_key";

/// The default rate limit, in requests a second: far above what SDKs and a UI send,
/// low enough to keep a flood from the store.
pub const DEFAULT_RATE_LIMIT: u32 = 1000;

/// The accepted API keys; never printed (`Debug` shows only how many).
#[derive(Clone, Default)]
pub struct ApiKeys(Arc<[String]>);

impl fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKeys({} configured)", self.0.len())
    }
}

impl ApiKeys {
    /// The keys, surrounding whitespace trimmed and empty ones dropped. A key must be
    /// printable ASCII without spaces, quotes, commas, semicolons or backslashes, so
    /// that it fits a header and a cookie as it is.
    ///
    /// ```
    /// use tracia_collector::security::ApiKeys;
    /// assert_eq!(ApiKeys::new(["k1", " ", "k2 "]).unwrap().len(), 2);
    /// assert!(ApiKeys::new(["with space"]).is_err());
    /// ```
    pub fn new<K: AsRef<str>>(keys: impl IntoIterator<Item = K>) -> Result<Self, String> {
        let keys: Vec<String> = keys
            .into_iter()
            .map(|k| k.as_ref().trim().to_owned())
            .filter(|k| !k.is_empty())
            .collect();
        let bad = |c: char| !c.is_ascii_graphic() || matches!(c, '"' | ',' | ';' | '\\');
        if keys.iter().any(|k| k.contains(bad)) {
            return Err(
                "an API key must be printable ASCII without spaces, quotes, commas, \
                 semicolons or backslashes"
                    .into(),
            );
        }
        Ok(Self(keys.into()))
    }

    /// How many keys there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// No keys: every request is let in.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether a request with these headers may pass: no keys are configured, or it
    /// presents one (bearer token or the UI's cookie). gRPC checks its metadata so.
    pub fn authorizes(&self, headers: &HeaderMap) -> bool {
        self.is_empty() || presented_key(headers, self)
    }

    /// Whether `candidate` is one of the keys, in time independent of where they differ
    /// (every key is compared in full).
    fn accepts(&self, candidate: &str) -> bool {
        self.0
            .iter()
            .fold(false, |found, key| found | constant_time_eq(key, candidate))
    }
}

fn constant_time_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        diff |= usize::from(a.get(i).unwrap_or(&0) ^ b.get(i).unwrap_or(&0));
    }
    diff == 0
}

/// A token bucket over the whole collector.
#[derive(Debug)]
pub struct RateLimiter {
    per_second: f64,
    bucket: Mutex<(f64, Instant)>,
}

impl RateLimiter {
    /// `per_second` requests a second, bursts up to as many; `None` for 0 (no limit).
    pub fn new(per_second: u32) -> Option<Self> {
        (per_second > 0).then(|| Self {
            per_second: f64::from(per_second),
            bucket: Mutex::new((f64::from(per_second), Instant::now())),
        })
    }

    /// Takes a token, or says how long until one is there.
    pub fn acquire(&self) -> Result<(), Duration> {
        let mut bucket = self.bucket.lock().unwrap_or_else(PoisonError::into_inner);
        let (tokens, last) = *bucket;
        let now = Instant::now();
        let refilled = (tokens + now.duration_since(last).as_secs_f64() * self.per_second)
            .min(self.per_second);
        if refilled >= 1.0 {
            *bucket = (refilled - 1.0, now);
            Ok(())
        } else {
            *bucket = (refilled, now);
            Err(Duration::from_secs_f64((1.0 - refilled) / self.per_second))
        }
    }
}

/// The middleware in front of every route: rate limit, then API key.
pub async fn guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    // Liveness probes carry no credentials and must not be starved by a flood.
    if path == "/healthz" {
        return next.run(request).await;
    }
    let api = path == "/api" || path.starts_with("/api/");
    if let Some(limiter) = &state.rate_limiter
        && let Err(wait) = limiter.acquire()
    {
        let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
        return refuse(api, ApiError::rate_limited(secs));
    }
    if state.api_keys.authorizes(request.headers()) {
        return next.run(request).await;
    }
    if request.method() == Method::GET
        && !api
        && let Ok(Query(q)) =
            Query::<std::collections::HashMap<String, String>>::try_from_uri(request.uri())
        && let Some(key) = q.get("key")
        && state.api_keys.accepts(key)
    {
        return remember_key(path, key);
    }
    let message = if api {
        "Missing or invalid API key: send Authorization: Bearer <key>"
    } else {
        "Missing or invalid API key: send Authorization: Bearer <key>, or open /?key=<key> once in the browser"
    };
    let mut response = refuse(api, ApiError::unauthorized(message));
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, "Bearer".parse().expect("static"));
    response
}

/// Whether the request carries a valid key as a bearer token or in the cookie.
fn presented_key(headers: &HeaderMap, keys: &ApiKeys) -> bool {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.split_once(' ')
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        })
        .map(|(_, token)| token.trim());
    let cookies = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().strip_prefix(KEY_COOKIE)?.strip_prefix('='));
    bearer.into_iter().chain(cookies).any(|k| keys.accepts(k))
}

/// Sets the key cookie and sends the browser back to the page without the key in its
/// address (so it stays out of history and logs).
fn remember_key(path: &str, key: &str) -> Response {
    // `//host` would be a redirect to another site.
    let location = if path.starts_with("//") { "/" } else { path };
    let cookie = format!("{KEY_COOKIE}={key}; Path=/; HttpOnly; SameSite=Strict");
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, location.to_owned()),
            (header::SET_COOKIE, cookie),
        ],
    )
        .into_response()
}

/// A refusal: Tracia's JSON under `/api`, plain text elsewhere (OTLP, UI).
fn refuse(api: bool, error: ApiError) -> Response {
    if api {
        error.into_response()
    } else {
        error.into_plain_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_compare_whole() {
        let keys = ApiKeys::new(["secret-1", "other"]).unwrap();
        assert!(keys.accepts("secret-1") && keys.accepts("other"));
        for wrong in ["secret-", "secret-12", "", "Secret-1"] {
            assert!(!keys.accepts(wrong), "{wrong}");
        }
        assert!(!ApiKeys::default().accepts(""));
        assert_eq!(format!("{keys:?}"), "ApiKeys(2 configured)");
    }

    #[test]
    fn cookie_and_bearer_are_read() {
        let keys = ApiKeys::new(["k1"]).unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, "a=b; tracia_key=k1".parse().unwrap());
        assert!(presented_key(&headers, &keys));
        headers.insert(header::COOKIE, "tracia_key=k2".parse().unwrap());
        assert!(!presented_key(&headers, &keys));
        headers.insert(header::AUTHORIZATION, "bearer k1".parse().unwrap());
        assert!(presented_key(&headers, &keys));
    }

    #[tokio::test(start_paused = true)]
    async fn the_bucket_refills_with_time() {
        let limiter = RateLimiter::new(2).unwrap();
        assert!(limiter.acquire().is_ok());
        assert!(limiter.acquire().is_ok());
        assert_eq!(limiter.acquire(), Err(Duration::from_millis(500)));
        tokio::time::advance(Duration::from_millis(500)).await;
        assert!(limiter.acquire().is_ok());
        assert!(limiter.acquire().is_err());
        assert!(RateLimiter::new(0).is_none());
    }
}
