//! The one error type of the crate, with Tracia's error codes.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{LazyLock, RwLock};
use std::time::Duration;

use regex::Regex;

/// What went wrong, as one of the Tracia error codes.
///
/// The codes are those of the Tracia API and its SDKs; [`ErrorCode::as_str`] gives the
/// wire spelling (`"PROVIDER_ERROR"`). Codes a server sends that this crate does not
/// know map to [`ErrorCode::Unknown`] and keep their raw text in [`Error::raw_code`].
///
/// ```
/// assert_eq!(tracia::ErrorCode::Timeout.as_str(), "TIMEOUT");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// The input was invalid; nothing was sent.
    InvalidRequest,
    /// No API key was found for the provider.
    MissingProviderApiKey,
    /// The provider could not be determined from the model, or does not offer it.
    UnsupportedModel,
    /// The provider answered with an error, or with a response that could not be read.
    ProviderError,
    /// The call did not finish within its timeout.
    Timeout,
    /// The connection failed before a response arrived.
    NetworkError,
    /// The call was aborted by the caller.
    Aborted,
    /// The Tracia API rejected the credentials (401).
    Unauthorized,
    /// The Tracia API did not find the resource (404).
    NotFound,
    /// The Tracia API refused a conflicting write, such as a duplicate slug (409).
    Conflict,
    /// `prompts.run` was missing template variables.
    MissingVariables,
    /// The Tracia server has no key for the prompt's provider.
    MissingProviderKey,
    /// The Tracia API rate limit was hit (429).
    RateLimited,
    /// Anything else.
    Unknown,
}

impl ErrorCode {
    /// The code as Tracia spells it on the wire.
    ///
    /// ```
    /// assert_eq!(tracia::ErrorCode::MissingProviderApiKey.as_str(), "MISSING_PROVIDER_API_KEY");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "INVALID_REQUEST",
            Self::MissingProviderApiKey => "MISSING_PROVIDER_API_KEY",
            Self::UnsupportedModel => "UNSUPPORTED_MODEL",
            Self::ProviderError => "PROVIDER_ERROR",
            Self::Timeout => "TIMEOUT",
            Self::NetworkError => "NETWORK_ERROR",
            Self::Aborted => "ABORTED",
            Self::Unauthorized => "UNAUTHORIZED",
            Self::NotFound => "NOT_FOUND",
            Self::Conflict => "CONFLICT",
            Self::MissingVariables => "MISSING_VARIABLES",
            Self::MissingProviderKey => "MISSING_PROVIDER_KEY",
            Self::RateLimited => "RATE_LIMITED",
            Self::Unknown => "UNKNOWN",
        }
    }

    /// Parses a wire code; unknown codes give [`ErrorCode::Unknown`].
    ///
    /// ```
    /// use tracia::ErrorCode;
    /// assert_eq!(ErrorCode::parse("NOT_FOUND"), ErrorCode::NotFound);
    /// assert_eq!(ErrorCode::parse("SOMETHING_NEW"), ErrorCode::Unknown);
    /// ```
    pub fn parse(code: &str) -> Self {
        const ALL: [ErrorCode; 14] = [
            ErrorCode::InvalidRequest,
            ErrorCode::MissingProviderApiKey,
            ErrorCode::UnsupportedModel,
            ErrorCode::ProviderError,
            ErrorCode::Timeout,
            ErrorCode::NetworkError,
            ErrorCode::Aborted,
            ErrorCode::Unauthorized,
            ErrorCode::NotFound,
            ErrorCode::Conflict,
            ErrorCode::MissingVariables,
            ErrorCode::MissingProviderKey,
            ErrorCode::RateLimited,
            ErrorCode::Unknown,
        ];
        ALL.into_iter()
            .find(|c| c.as_str() == code)
            .unwrap_or(Self::Unknown)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error of every fallible call in this crate.
///
/// Opaque like `reqwest::Error`: ask it what it is with [`Error::code`], the `is_*`
/// methods, [`Error::status`] and [`Error::retry_after`]. Its message never carries a
/// secret: API keys and authorization headers are scrubbed when it is built.
///
/// ```
/// # async fn demo(tracia: tracia::Tracia) {
/// match tracia.run_local(tracia::RunLocal::new("gpt-4o").user("hi")).await {
///     Ok(result) => println!("{}", result.text),
///     Err(e) if e.is_timeout() => eprintln!("too slow: {e}"),
///     Err(e) => eprintln!("{} (HTTP {:?})", e.code(), e.status()),
/// }
/// # }
/// ```
pub struct Error {
    inner: Box<Inner>,
}

struct Inner {
    code: ErrorCode,
    raw_code: Option<String>,
    message: String,
    status: Option<u16>,
    retry_after: Option<Duration>,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

/// The longest error message kept, in bytes.
const MAX_MESSAGE_BYTES: usize = 8 * 1024;

pub(crate) type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Builds an error; the message is scrubbed of secrets here, once, and cut to
    /// [`MAX_MESSAGE_BYTES`] (it goes on the span: a provider's error can be a megabyte).
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        let mut message = redact(&message.into());
        if message.len() > MAX_MESSAGE_BYTES {
            let mut cut = MAX_MESSAGE_BYTES;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push_str("…[truncated]");
        }
        Self {
            inner: Box::new(Inner {
                code,
                raw_code: None,
                message,
                status: None,
                retry_after: None,
                source: None,
            }),
        }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidRequest, message)
    }

    pub(crate) fn with_status(mut self, status: u16) -> Self {
        self.inner.status = Some(status);
        self
    }

    /// Keeps the code exactly as the server sent it (also when it is unknown).
    pub(crate) fn with_raw_code(mut self, raw: impl Into<String>) -> Self {
        self.inner.raw_code = Some(raw.into());
        self
    }

    pub(crate) fn with_retry_after(mut self, retry_after: Option<Duration>) -> Self {
        self.inner.retry_after = retry_after;
        self
    }

    pub(crate) fn with_source(
        mut self,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        self.inner.source = Some(Box::new(source));
        self
    }

    /// A copy without the source, for an error that must be both yielded and kept.
    pub(crate) fn duplicate(&self) -> Self {
        Self {
            inner: Box::new(Inner {
                code: self.inner.code,
                raw_code: self.inner.raw_code.clone(),
                message: self.inner.message.clone(),
                status: self.inner.status,
                retry_after: self.inner.retry_after,
                source: None,
            }),
        }
    }

    /// The Tracia error code.
    pub fn code(&self) -> ErrorCode {
        self.inner.code
    }

    /// The code exactly as a server sent it, when it sent one.
    pub fn raw_code(&self) -> Option<&str> {
        self.inner.raw_code.as_deref()
    }

    /// The message, already scrubbed of secrets.
    pub fn message(&self) -> &str {
        &self.inner.message
    }

    /// The HTTP status of the failed response, if there was one.
    pub fn status(&self) -> Option<u16> {
        self.inner.status
    }

    /// How long the server asked to wait before retrying (`Retry-After`), if it said.
    pub fn retry_after(&self) -> Option<Duration> {
        self.inner.retry_after
    }

    /// True when the call timed out.
    pub fn is_timeout(&self) -> bool {
        self.inner.code == ErrorCode::Timeout
    }

    /// True when the call was aborted by the caller.
    pub fn is_aborted(&self) -> bool {
        self.inner.code == ErrorCode::Aborted
    }

    /// True when the provider answered with an error or an unreadable response.
    pub fn is_provider(&self) -> bool {
        self.inner.code == ErrorCode::ProviderError
    }

    /// True when the connection failed.
    pub fn is_network(&self) -> bool {
        self.inner.code == ErrorCode::NetworkError
    }

    /// True when the input was rejected before anything was sent.
    pub fn is_invalid_request(&self) -> bool {
        self.inner.code == ErrorCode::InvalidRequest
    }

    /// A short, low-cardinality value for the OpenTelemetry `error.type` attribute:
    /// the HTTP status for provider answers (`"429"`), otherwise the code in lower case.
    pub(crate) fn otel_error_type(&self) -> String {
        match (self.inner.code, self.inner.status) {
            (ErrorCode::ProviderError, Some(status)) => status.to_string(),
            (code, _) => code.as_str().to_ascii_lowercase(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] {}", self.inner.code, self.inner.message)?;
        if let Some(status) = self.inner.status {
            write!(f, " (status: {status})")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("tracia::Error");
        d.field("code", &self.inner.code)
            .field("message", &self.inner.message);
        if let Some(status) = self.inner.status {
            d.field("status", &status);
        }
        if let Some(raw) = &self.inner.raw_code {
            d.field("raw_code", raw);
        }
        d.finish()
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner
            .source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// Scrubs credentials from text bound for an error, a span or a log.
///
/// The patterns are the Tracia SDKs' (OpenAI and Anthropic keys, bearer and basic
/// credentials, authorization headers, Tracia keys, `api_key=` and `key=` query values).
/// Besides, the exact values of every secret configured in this process are removed
/// whatever their shape: provider keys (set in code, from the environment or per call),
/// the Tracia key, AWS secret keys and session tokens, OTLP header values. Values
/// shorter than 8 bytes are not scrubbed that way (they would erase common words), and
/// the most recent 1024 values are kept.
///
/// ```
/// assert_eq!(tracia::redact("Authorization: Bearer abc.def"), "[REDACTED]");
/// assert!(!tracia::redact("key sk-0123456789abcdefghijklmn leaked").contains("sk-0"));
/// ```
pub fn redact(text: &str) -> String {
    static PATTERNS: LazyLock<Vec<Regex>> = LazyLock::new(|| {
        [
            r"sk-ant-[A-Za-z0-9_-]{20,}",
            r"sk-[A-Za-z0-9_-]{20,}",
            r"(?i)Bearer\s+[A-Za-z0-9._~+/=-]+",
            r"(?i)Basic\s+[A-Za-z0-9+/=]+",
            r"(?i)(authorization|x-api-key|x-goog-api-key)\s*[:=]\s*\S+",
            r"\btr_[A-Za-z0-9]{20,}",
            r"(?i)\b(api[_-]?key|key)=[^&\s]+",
            r"AIza[0-9A-Za-z_-]{30,}",
            // Bedrock API keys: long-term (`ABSK…`) and short-term (`bedrock-api-key-…`).
            r"\bABSK[A-Za-z0-9+/=]{20,}",
            r"bedrock-api-key-[A-Za-z0-9+/=%._-]{20,}",
        ]
        .iter()
        .map(|p| Regex::new(p).expect("static pattern"))
        .collect()
    });
    let mut out = text.to_owned();
    // The exact values first: a pattern could otherwise cut one in half and leave
    // the rest.
    if let Ok(secrets) = SECRETS.read() {
        // Longest first: a secret containing another is scrubbed whole.
        let mut found: Vec<&String> = secrets
            .iter()
            .filter(|s| out.contains(s.as_str()))
            .collect();
        found.sort_by_key(|s| std::cmp::Reverse(s.len()));
        for secret in found {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), "[REDACTED]");
            }
        }
    }
    for re in PATTERNS.iter() {
        if re.is_match(&out) {
            out = re.replace_all(&out, "[REDACTED]").into_owned();
        }
    }
    out
}

/// The shortest configured secret [`redact`] removes by value.
pub(crate) const MIN_SECRET_LEN: usize = 8;

/// How many configured secret values [`redact`] remembers (the most recent ones), so
/// that a server passing a key per call does not grow the set without end.
pub(crate) const MAX_SECRETS: usize = 1024;

/// The secret values configured in this process, oldest first (see [`register_secret`]).
static SECRETS: RwLock<VecDeque<String>> = RwLock::new(VecDeque::new());

/// Remembers a configured secret so that [`redact`] removes its exact value from every
/// error, span and log line. Called where keys enter the SDK (client and pipeline
/// builders, per-call keys); values under [`MIN_SECRET_LEN`] bytes are skipped.
pub(crate) fn register_secret(secret: &str) {
    let secret = secret.trim();
    if secret.len() < MIN_SECRET_LEN {
        return;
    }
    if SECRETS
        .read()
        .is_ok_and(|s| s.iter().any(|known| known == secret))
    {
        return;
    }
    let Ok(mut secrets) = SECRETS.write() else {
        return;
    };
    if secrets.iter().any(|known| known == secret) {
        return;
    }
    if secrets.len() == MAX_SECRETS {
        secrets.pop_front();
    }
    secrets.push_back(secret.to_owned());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrubs_every_known_secret_shape() {
        let text = "key sk-proj-abcdefghijklmnopqrstuvwx and sk-ant-api03-abcdefghijklmnopqrstuv \
                    Authorization: Bearer abc.def-ghi x-api-key: s3cr3t ?key=AIzaSyA123&x=1 \
                    tr_0123456789abcdef0123456789";
        let out = redact(text);
        for secret in [
            "abcdefghijklmnopqrstuvwx",
            "api03",
            "abc.def",
            "s3cr3t",
            "AIzaSyA123",
            "tr_0123456789abcdef0123456789",
        ] {
            assert!(!out.contains(secret), "{secret} leaked in {out}");
        }
    }

    #[test]
    fn scrubs_configured_secrets_of_any_shape() {
        register_secret("plainRandomValue7Q");
        register_secret("short");
        let out = redact("echo: plainRandomValue7Q and short");
        assert_eq!(out, "echo: [REDACTED] and short");
    }

    #[test]
    fn long_messages_are_cut() {
        let e = Error::new(ErrorCode::ProviderError, "é".repeat(MAX_MESSAGE_BYTES));
        assert!(e.message().len() <= MAX_MESSAGE_BYTES + "…[truncated]".len());
        assert!(e.message().ends_with("…[truncated]"));
    }

    #[test]
    fn keeps_tracia_span_and_trace_ids() {
        let text = "span sp_0123456789abcdef in tr_0123456789abcdef";
        assert_eq!(redact(text), text);
    }

    #[test]
    fn display_has_code_message_and_status() {
        let e = Error::new(ErrorCode::ProviderError, "boom").with_status(503);
        assert_eq!(e.to_string(), "[PROVIDER_ERROR] boom (status: 503)");
        assert_eq!(e.otel_error_type(), "503");
        assert_eq!(
            Error::new(ErrorCode::Timeout, "t").otel_error_type(),
            "timeout"
        );
    }
}
