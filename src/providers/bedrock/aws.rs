//! AWS credentials and SigV4 signing, for Bedrock calls made without a Bedrock API key.

use std::fmt;
use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    PercentEncodingMode, SignableBody, SignableRequest, SigningSettings, sign,
};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use secrecy::{ExposeSecret, SecretString};

use crate::config;
use crate::error::{Error, Result};

/// Bedrock runtime's SigV4 signing name.
const SERVICE: &str = "bedrock";

/// AWS access keys for Bedrock calls signed with SigV4, used when no Bedrock API key
/// is set. The secret and session token never appear in `Debug` output or errors.
///
/// ```
/// use tracia::{AwsCredentials, Tracia};
/// let creds = AwsCredentials::new("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
///     .with_session_token("session-token");
/// assert!(!format!("{creds:?}").contains("EXAMPLEKEY"));
/// let tracia = Tracia::builder().without_env().with_aws_credentials(creds)
///     .with_aws_region("us-east-1").build().unwrap();
/// # drop(tracia);
/// ```
#[derive(Clone)]
pub struct AwsCredentials {
    access_key_id: String,
    secret_access_key: SecretString,
    session_token: Option<SecretString>,
}

impl AwsCredentials {
    /// An access key id and its secret.
    pub fn new(access_key_id: impl Into<String>, secret_access_key: impl Into<String>) -> Self {
        Self {
            access_key_id: access_key_id.into(),
            secret_access_key: SecretString::from(secret_access_key.into()),
            session_token: None,
        }
    }

    /// The session token of temporary (STS) credentials.
    pub fn with_session_token(mut self, token: impl Into<String>) -> Self {
        self.session_token = Some(SecretString::from(token.into()));
        self
    }

    /// Has [`crate::redact`] scrub the secret key and the session token by value.
    pub(crate) fn register_secrets(&self) {
        crate::error::register_secret(self.secret_access_key.expose_secret());
        if let Some(token) = &self.session_token {
            crate::error::register_secret(token.expose_secret());
        }
    }

    /// `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` (plus `AWS_SESSION_TOKEN`), as
    /// read by `env`; both keys or nothing.
    pub(crate) fn from_env(env: impl Fn(&str) -> Option<String>) -> Option<Self> {
        let creds = Self::new(
            env(config::AWS_ACCESS_KEY_ID)?,
            env(config::AWS_SECRET_ACCESS_KEY)?,
        );
        Some(match env(config::AWS_SESSION_TOKEN) {
            Some(token) => creds.with_session_token(token),
            None => creds,
        })
    }
}

impl fmt::Debug for AwsCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The key id is an identifier, not a secret (AWS's own Debug shows it too).
        f.debug_struct("AwsCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"[REDACTED]")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "[REDACTED]"),
            )
            .finish()
    }
}

/// Signs a built request with SigV4 for Bedrock in `region`, adding `x-amz-date`,
/// `x-amz-security-token` (temporary credentials) and `authorization`.
///
/// Only `host`, `content-type` and those `x-amz-*` headers are signed, so headers
/// added later (`traceparent`) or rewritten by proxies never break the signature.
/// The URL must be percent-encoded once, as it goes on the wire (`:` as `%3A`); the
/// canonical request encodes it again (`%253A`), as SigV4 requires for every
/// service but S3.
pub(crate) fn sign_request(
    request: &mut reqwest::Request,
    credentials: &AwsCredentials,
    region: &str,
    time: SystemTime,
) -> Result<()> {
    let failed =
        |e: &dyn fmt::Display| Error::invalid(format!("cannot sign the Bedrock request: {e}"));
    let identity: Identity = Credentials::new(
        credentials.access_key_id.as_str(),
        credentials.secret_access_key.expose_secret(),
        credentials
            .session_token
            .as_ref()
            .map(|t| t.expose_secret().to_owned()),
        None,
        "tracia",
    )
    .into();
    let mut settings = SigningSettings::default();
    settings.percent_encoding_mode = PercentEncodingMode::Double;
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(SERVICE)
        .time(time)
        .settings(settings)
        .build()
        .map_err(|e| failed(&e))?
        .into();
    let headers = {
        let content_type = request
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        let body = request
            .body()
            .and_then(reqwest::Body::as_bytes)
            .unwrap_or_default();
        let signable = SignableRequest::new(
            request.method().as_str(),
            request.url().as_str(),
            content_type.map(|v| ("content-type", v)).into_iter(),
            SignableBody::Bytes(body),
        )
        .map_err(|e| failed(&e))?;
        let (instructions, _signature) = sign(signable, &params)
            .map_err(|e| failed(&e))?
            .into_parts();
        instructions.into_parts().0
    };
    for header in headers {
        let mut value = HeaderValue::from_str(header.value()).map_err(|e| failed(&e))?;
        value.set_sensitive(header.sensitive() || header.name() == "authorization");
        request
            .headers_mut()
            .insert(HeaderName::from_static(header.name()), value);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// AWS's documentation example credentials, with a fixed time, body and model id
    /// containing `:`. The expected header was computed independently of this crate,
    /// with Python's `hmac`/`hashlib`, from the canonical request
    /// `POST\n/model/us.anthropic.claude-3-haiku-20240307-v1%253A0/converse\n\n`
    /// `content-type:application/json\nhost:bedrock-runtime.us-east-1.amazonaws.com\n`
    /// `x-amz-date:20150830T123600Z\n\ncontent-type;host;x-amz-date\n<sha256(body)>`.
    #[test]
    fn known_answer_with_a_double_encoded_path() {
        let url = "https://bedrock-runtime.us-east-1.amazonaws.com/model/us.anthropic.claude-3-haiku-20240307-v1%3A0/converse";
        let mut request = reqwest::Client::new()
            .post(url)
            .header(CONTENT_TYPE, "application/json")
            .body(r#"{"messages":[{"role":"user","content":[{"text":"hi"}]}]}"#)
            .build()
            .unwrap();
        let creds = AwsCredentials::new("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY");
        let time = SystemTime::UNIX_EPOCH + Duration::from_secs(1_440_938_160); // 2015-08-30T12:36:00Z
        sign_request(&mut request, &creds, "us-east-1", time).unwrap();
        let h = |n: &str| request.headers()[n].to_str().unwrap().to_owned();
        assert_eq!(h("x-amz-date"), "20150830T123600Z");
        assert_eq!(h("authorization"), EXPECTED_AUTHORIZATION);
        assert!(request.headers()["authorization"].is_sensitive());
        assert_eq!(
            request.url().path(),
            "/model/us.anthropic.claude-3-haiku-20240307-v1%3A0/converse"
        );
    }

    const EXPECTED_AUTHORIZATION: &str = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/bedrock/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature=0daf058aceaa9d6aae76731973a84e56e3d029546a5fd23d52d3958e3983f1c8";

    #[test]
    fn debug_hides_secrets_and_env_needs_both_keys() {
        let creds = AwsCredentials::new("AKID", "hidden-key").with_session_token("hidden-token");
        let text = format!("{creds:?}");
        assert!(text.contains("AKID") && !text.contains("hidden"), "{text}");
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert!(AwsCredentials::from_env(env(&[("AWS_ACCESS_KEY_ID", "AKID")])).is_none());
        let from_env = AwsCredentials::from_env(env(&[
            ("AWS_ACCESS_KEY_ID", "AKID"),
            ("AWS_SECRET_ACCESS_KEY", "s"),
            ("AWS_SESSION_TOKEN", "t"),
        ]))
        .unwrap();
        assert_eq!(from_env.session_token.unwrap().expose_secret(), "t");
    }
}
