//! Who may use the collector, and how fast: API keys and a rate limit, checked in front
//! of every route but `/healthz`.
//!
//! - **API keys.** Once any is configured, every request needs `Authorization: Bearer
//!   <key>`, or (for the UI in a browser) the `tracia_key` cookie that visiting any
//!   page with `?key=<key>` once sets (`HttpOnly`, `SameSite=Strict`). Keys are compared
//!   in constant time. A refusal is 401: Tracia's JSON under `/api`, plain text elsewhere.
//! - **Rate limit.** A token bucket per key: N requests a second, bursts up to N.
//!   Requests without a valid key spend a separate, smaller bucket (a tenth), so a
//!   keyless flood never starves keyed clients (nor key guessing goes fast). Without
//!   keys, one bucket for everyone (it protects the store). Beyond it, 429 with
//!   `Retry-After`.
//!
//! Both are checked after [`crate::admission`] (which refuses what a web page could
//! send), and gRPC checks them before it decodes a message (the `grpc` module).

use std::collections::HashMap;
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

/// Requests without a valid key get this fraction of the rate limit (at least 1/s).
const UNAUTHENTICATED_SHARE: u32 = 10;

/// The shortest key accepted on a collector listening beyond loopback.
pub const MIN_KEY_LEN: usize = 16;

/// Whose budget a request spends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Caller {
    /// No keys are configured: everyone is let in and shares one bucket.
    Anyone,
    /// The configured key at this index.
    Key(usize),
    /// Keys are configured and the request presents none of them.
    Unauthenticated,
}

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

    /// Who sends a request with these headers: anyone (no keys configured), the holder
    /// of a key it presents (bearer token or the UI's cookie), or nobody known. gRPC
    /// checks its metadata so.
    ///
    /// ```
    /// use tracia_collector::security::{ApiKeys, Caller};
    /// let keys = ApiKeys::new(["a-key-of-16-chars"]).unwrap();
    /// let mut headers = axum::http::HeaderMap::new();
    /// assert_eq!(keys.identify(&headers), Caller::Unauthenticated);
    /// headers.insert("authorization", "Bearer a-key-of-16-chars".parse().unwrap());
    /// assert_eq!(keys.identify(&headers), Caller::Key(0));
    /// assert_eq!(ApiKeys::default().identify(&headers), Caller::Anyone);
    /// ```
    pub fn identify(&self, headers: &HeaderMap) -> Caller {
        if self.is_empty() {
            return Caller::Anyone;
        }
        presented_key(headers, self).map_or(Caller::Unauthenticated, Caller::Key)
    }

    /// The length of the shortest key, `None` without keys.
    pub fn shortest(&self) -> Option<usize> {
        self.0.iter().map(|k| k.chars().count()).min()
    }

    /// Which key `candidate` is, in time independent of where they differ (every key is
    /// compared in full).
    fn position(&self, candidate: &str) -> Option<usize> {
        self.0.iter().enumerate().fold(None, |found, (i, key)| {
            let matches = constant_time_eq(key, candidate);
            found.or(matches.then_some(i))
        })
    }

    fn accepts(&self, candidate: &str) -> bool {
        self.position(candidate).is_some()
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

/// Token buckets, one per [`Caller`] (so at most one per key, plus two).
#[derive(Debug)]
pub struct RateLimiter {
    per_second: u32,
    buckets: Mutex<HashMap<Caller, (f64, Instant)>>,
}

impl RateLimiter {
    /// `per_second` requests a second for each caller, bursts up to as many (a tenth,
    /// at least 1, for [`Caller::Unauthenticated`]); `None` for 0 (no limit).
    pub fn new(per_second: u32) -> Option<Self> {
        (per_second > 0).then(|| Self {
            per_second,
            buckets: Mutex::default(),
        })
    }

    /// Takes a token from `caller`'s bucket, or says how long until one is there.
    pub fn acquire(&self, caller: Caller) -> Result<(), Duration> {
        let rate = f64::from(match caller {
            Caller::Unauthenticated => (self.per_second / UNAUTHENTICATED_SHARE).max(1),
            Caller::Anyone | Caller::Key(_) => self.per_second,
        });
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        let bucket = buckets.entry(caller).or_insert((rate, now));
        let (tokens, last) = *bucket;
        let refilled = (tokens + now.duration_since(last).as_secs_f64() * rate).min(rate);
        if refilled >= 1.0 {
            *bucket = (refilled - 1.0, now);
            Ok(())
        } else {
            *bucket = (refilled, now);
            Err(Duration::from_secs_f64((1.0 - refilled) / rate))
        }
    }
}

/// The middleware in front of every route: who calls, their rate limit, then whether
/// they may.
pub async fn guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    // Liveness probes carry no credentials and must not be starved by a flood.
    if path == "/healthz" {
        return next.run(request).await;
    }
    let api = path == "/api" || path.starts_with("/api/");
    let caller = state.api_keys.identify(request.headers());
    if let Some(limiter) = &state.rate_limiter
        && let Err(wait) = limiter.acquire(caller)
    {
        let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
        return refuse(api, ApiError::rate_limited(secs));
    }
    if caller != Caller::Unauthenticated {
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

/// Which valid key the request carries as a bearer token or in the cookie.
fn presented_key(headers: &HeaderMap, keys: &ApiKeys) -> Option<usize> {
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
    bearer
        .into_iter()
        .chain(cookies)
        .find_map(|k| keys.position(k))
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
        assert_eq!(presented_key(&headers, &keys), Some(0));
        headers.insert(header::COOKIE, "tracia_key=k2".parse().unwrap());
        assert_eq!(presented_key(&headers, &keys), None);
        headers.insert(header::AUTHORIZATION, "bearer k1".parse().unwrap());
        assert_eq!(presented_key(&headers, &keys), Some(0));
        let two = ApiKeys::new(["k1", "k2"]).unwrap();
        assert_eq!(two.identify(&headers), Caller::Key(0));
        headers.insert(header::AUTHORIZATION, "bearer k2".parse().unwrap());
        assert_eq!(two.identify(&headers), Caller::Key(1));
    }

    #[tokio::test(start_paused = true)]
    async fn the_bucket_refills_with_time() {
        let limiter = RateLimiter::new(2).unwrap();
        let key = Caller::Key(0);
        assert!(limiter.acquire(key).is_ok());
        assert!(limiter.acquire(key).is_ok());
        assert_eq!(limiter.acquire(key), Err(Duration::from_millis(500)));
        tokio::time::advance(Duration::from_millis(500)).await;
        assert!(limiter.acquire(key).is_ok());
        assert!(limiter.acquire(key).is_err());
        assert!(RateLimiter::new(0).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn each_caller_has_its_own_bucket() {
        let limiter = RateLimiter::new(20).unwrap();
        // Keyless failures get a tenth: 2 a second.
        assert!(limiter.acquire(Caller::Unauthenticated).is_ok());
        assert!(limiter.acquire(Caller::Unauthenticated).is_ok());
        assert_eq!(
            limiter.acquire(Caller::Unauthenticated),
            Err(Duration::from_millis(500))
        );
        for _ in 0..20 {
            assert!(limiter.acquire(Caller::Key(1)).is_ok());
        }
        assert!(limiter.acquire(Caller::Key(1)).is_err());
        assert!(
            limiter.acquire(Caller::Key(0)).is_ok(),
            "another key's bucket"
        );
    }
}
