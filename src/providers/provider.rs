//! Providers and how a model name resolves to one.

use std::fmt;

use crate::config;
use crate::error::{Error, ErrorCode, Result};

/// An LLM provider.
///
/// ```
/// use tracia::Provider;
/// assert_eq!(Provider::resolve("gpt-4o", None).unwrap(), Provider::OpenAi);
/// assert_eq!(Provider::AmazonBedrock.as_str(), "amazon_bedrock");
/// assert_eq!(Provider::AmazonBedrock.otel_name(), "aws.bedrock");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Provider {
    /// OpenAI, and any OpenAI-compatible server through a base URL.
    OpenAi,
    /// Anthropic.
    Anthropic,
    /// Google Gemini (AI Studio).
    Google,
    /// Amazon Bedrock.
    AmazonBedrock,
    /// Voyage AI (embeddings only).
    Voyage,
}

/// The checks of a model name before any I/O: not empty, no control characters (it
/// goes into URLs, spans and logs), and not a dot segment (`.` or `..`), which URL
/// parsing would resolve into another path even percent-encoded.
pub(crate) fn check_model(model: &str) -> Result<()> {
    if model.trim().is_empty() {
        return Err(Error::invalid("model is required and cannot be empty"));
    }
    if model.chars().any(char::is_control) || matches!(model.trim(), "." | "..") {
        return Err(Error::invalid(format!(
            "model {model:?} is not a model id: it has control characters or is a dot path segment"
        )));
    }
    Ok(())
}

impl Provider {
    /// Tracia's name for the provider (`openai`, `anthropic`, `google`, `amazon_bedrock`, `voyage`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OpenAi => "openai",
            Self::Anthropic => "anthropic",
            Self::Google => "google",
            Self::AmazonBedrock => "amazon_bedrock",
            Self::Voyage => "voyage",
        }
    }

    /// The OpenTelemetry `gen_ai.provider.name` value.
    pub fn otel_name(self) -> &'static str {
        match self {
            Self::OpenAi => "openai",
            Self::Anthropic => "anthropic",
            Self::Google => "gcp.gemini",
            Self::AmazonBedrock => "aws.bedrock",
            Self::Voyage => "voyage",
        }
    }

    /// The environment variable holding the provider's API key.
    pub fn api_key_env(self) -> &'static str {
        match self {
            Self::OpenAi => config::OPENAI_API_KEY,
            Self::Anthropic => config::ANTHROPIC_API_KEY,
            Self::Google => config::GOOGLE_API_KEY,
            Self::AmazonBedrock => config::BEDROCK_API_KEY,
            Self::Voyage => config::VOYAGE_API_KEY,
        }
    }

    /// Every environment variable that may hold the key, in the order they are tried
    /// (the Tracia name first, then the provider's own SDK name).
    pub(crate) fn api_key_envs(self) -> &'static [&'static str] {
        match self {
            Self::OpenAi => &[config::OPENAI_API_KEY],
            Self::Anthropic => &[config::ANTHROPIC_API_KEY],
            Self::Google => &[config::GOOGLE_API_KEY, config::GEMINI_API_KEY],
            Self::AmazonBedrock => &[config::BEDROCK_API_KEY, config::AWS_BEARER_TOKEN_BEDROCK],
            Self::Voyage => &[config::VOYAGE_API_KEY],
        }
    }

    /// The environment variable overriding the provider's base URL (each provider
    /// SDK's own name for it).
    pub(crate) fn base_url_env(self) -> &'static str {
        match self {
            Self::OpenAi => config::OPENAI_BASE_URL,
            Self::Anthropic => config::ANTHROPIC_BASE_URL,
            Self::Google => config::GOOGLE_GEMINI_BASE_URL,
            Self::AmazonBedrock => config::AWS_ENDPOINT_URL_BEDROCK_RUNTIME,
            Self::Voyage => config::VOYAGE_BASE_URL,
        }
    }

    /// The public endpoint; Bedrock's depends on the AWS region.
    pub(crate) fn default_base_url(self, aws_region: &str) -> String {
        match self {
            Self::OpenAi => "https://api.openai.com/v1".into(),
            Self::Anthropic => "https://api.anthropic.com".into(),
            Self::Google => "https://generativelanguage.googleapis.com".into(),
            Self::AmazonBedrock => format!("https://bedrock-runtime.{aws_region}.amazonaws.com"),
            Self::Voyage => "https://api.voyageai.com/v1".into(),
        }
    }

    /// Every provider, in declaration order.
    pub(crate) const ALL: [Provider; 5] = [
        Self::OpenAi,
        Self::Anthropic,
        Self::Google,
        Self::AmazonBedrock,
        Self::Voyage,
    ];

    /// Parses Tracia's name (any case; `bedrock` is accepted for `amazon_bedrock`).
    ///
    /// ```
    /// assert_eq!(tracia::Provider::parse("OPENAI"), Some(tracia::Provider::OpenAi));
    /// ```
    pub fn parse(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "openai" => Some(Self::OpenAi),
            "anthropic" => Some(Self::Anthropic),
            "google" | "gemini" => Some(Self::Google),
            "amazon_bedrock" | "bedrock" => Some(Self::AmazonBedrock),
            "voyage" => Some(Self::Voyage),
            _ => None,
        }
    }

    /// Resolves the provider of `model` the way the Tracia SDKs do: an explicit provider,
    /// then the model registry, then Bedrock detection, then name prefixes.
    pub fn resolve(model: &str, explicit: Option<Provider>) -> Result<Self> {
        if let Some(p) = explicit {
            return Ok(p);
        }
        if let Some(p) = registry_provider(model) {
            return Ok(p);
        }
        if is_bedrock_model(model) {
            return Ok(Self::AmazonBedrock);
        }
        const PREFIXES: [(&str, Provider); 7] = [
            ("gpt-", Provider::OpenAi),
            ("o1", Provider::OpenAi),
            ("o3", Provider::OpenAi),
            ("o4", Provider::OpenAi),
            ("claude-", Provider::Anthropic),
            ("gemini-", Provider::Google),
            ("voyage-", Provider::Voyage),
        ];
        PREFIXES
            .iter()
            .find(|(prefix, _)| model.starts_with(prefix))
            .map(|(_, p)| *p)
            .ok_or_else(|| {
                Error::new(
                    ErrorCode::UnsupportedModel,
                    format!(
                        "Cannot determine provider for model '{model}'. Please specify the provider explicitly."
                    ),
                )
            })
    }
}

impl serde::Serialize for Provider {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

const BEDROCK_VENDORS: [&str; 6] = [
    "anthropic.",
    "amazon.",
    "meta.",
    "mistral.",
    "cohere.",
    "deepseek.",
];
const BEDROCK_REGIONS: [&str; 7] = ["us", "eu", "ap", "sa", "ca", "me", "af"];

/// The Bedrock model id for `region`, as the Tracia SDKs rewrite it: the cross-region
/// inference prefix of the region (`eu` for `eu-central-1`) replaces a known prefix or
/// is prepended. ARNs name one resource exactly and are left alone.
pub(crate) fn bedrock_model_id(model: &str, region: &str) -> String {
    if model.starts_with("arn:") {
        return model.to_owned();
    }
    let prefix = region.split('-').next().unwrap_or(region);
    let bare = match model.split_once('.') {
        Some((head, rest)) if BEDROCK_REGIONS.contains(&head) => rest,
        _ => model,
    };
    format!("{prefix}.{bare}")
}

fn is_bedrock_model(model: &str) -> bool {
    let bare = match model.split_once('.') {
        Some((region, rest)) if BEDROCK_REGIONS.contains(&region) => rest,
        _ => model,
    };
    BEDROCK_VENDORS.iter().any(|v| bare.starts_with(v))
}

fn registry_provider(model: &str) -> Option<Provider> {
    [
        (Provider::OpenAi, OPENAI_CHAT_MODELS),
        (Provider::Anthropic, ANTHROPIC_CHAT_MODELS),
        (Provider::Google, GOOGLE_CHAT_MODELS),
        (Provider::AmazonBedrock, BEDROCK_CHAT_MODELS),
    ]
    .into_iter()
    .chain(EMBEDDING_MODELS.iter().map(|(p, m)| (*p, *m)))
    .find(|(_, models)| models.contains(&model))
    .map(|(p, _)| p)
}

/// The Tracia registry of chat models (Node SDK `MODEL_TO_PROVIDER`): OpenAI.
pub(crate) const OPENAI_CHAT_MODELS: &[&str] = &[
    "chatgpt-4o-latest",
    "gpt-3.5-turbo",
    "gpt-3.5-turbo-0125",
    "gpt-3.5-turbo-1106",
    "gpt-3.5-turbo-16k",
    "gpt-4",
    "gpt-4-0125-preview",
    "gpt-4-1106-preview",
    "gpt-4-turbo",
    "gpt-4-turbo-2024-04-09",
    "gpt-4-turbo-preview",
    "gpt-4.1",
    "gpt-4.1-2025-04-14",
    "gpt-4.1-mini",
    "gpt-4.1-mini-2025-04-14",
    "gpt-4.1-nano",
    "gpt-4.1-nano-2025-04-14",
    "gpt-4o",
    "gpt-4o-2024-05-13",
    "gpt-4o-2024-08-06",
    "gpt-4o-2024-11-20",
    "gpt-4o-mini",
    "gpt-4o-mini-2024-07-18",
    "gpt-4o-mini-search-preview",
    "gpt-4o-mini-search-preview-2025-03-11",
    "gpt-4o-search-preview",
    "gpt-4o-search-preview-2025-03-11",
    "gpt-5",
    "gpt-5-2025-08-07",
    "gpt-5-chat-latest",
    "gpt-5-codex",
    "gpt-5-mini",
    "gpt-5-mini-2025-08-07",
    "gpt-5-nano",
    "gpt-5-nano-2025-08-07",
    "gpt-5-pro",
    "gpt-5-pro-2025-10-06",
    "gpt-5.1",
    "gpt-5.1-2025-11-13",
    "gpt-5.1-chat-latest",
    "gpt-5.1-codex",
    "gpt-5.1-codex-max",
    "gpt-5.1-codex-mini",
    "gpt-5.2",
    "gpt-5.2-2025-12-11",
    "gpt-5.2-chat-latest",
    "gpt-5.2-pro",
    "gpt-5.2-pro-2025-12-11",
    "o1",
    "o1-2024-12-17",
    "o1-pro",
    "o1-pro-2025-03-19",
    "o3",
    "o3-2025-04-16",
    "o3-mini",
    "o3-mini-2025-01-31",
    "o4-mini",
    "o4-mini-2025-04-16",
];

/// The Tracia registry of chat models: Anthropic.
pub(crate) const ANTHROPIC_CHAT_MODELS: &[&str] = &[
    "claude-3-haiku-20240307",
    "claude-3-opus-20240229",
    "claude-3-7-sonnet-20250219",
    "claude-4-opus-20250514",
    "claude-4-sonnet-20250514",
    "claude-sonnet-4-20250514",
    "claude-opus-4-20250514",
    "claude-opus-4-1",
    "claude-opus-4-1-20250805",
    "claude-sonnet-4-5",
    "claude-sonnet-4-5-20250929",
    "claude-haiku-4-5",
    "claude-haiku-4-5-20251001",
    "claude-opus-4-5",
    "claude-opus-4-5-20251101",
];

/// The Tracia registry of chat models: Google.
pub(crate) const GOOGLE_CHAT_MODELS: &[&str] = &[
    "gemini-2.0-flash",
    "gemini-2.0-flash-001",
    "gemini-2.0-flash-exp",
    "gemini-2.0-flash-lite",
    "gemini-2.0-flash-lite-001",
    "gemini-2.5-flash",
    "gemini-2.5-flash-lite",
    "gemini-2.5-flash-lite-preview-09-2025",
    "gemini-2.5-flash-preview-09-2025",
    "gemini-2.5-pro",
    "gemini-3-pro-preview",
    "gemini-3-flash-preview",
];

/// The Tracia registry of chat models: Amazon Bedrock.
pub(crate) const BEDROCK_CHAT_MODELS: &[&str] = &[
    "anthropic.claude-haiku-4-5-20251001-v1:0",
    "anthropic.claude-sonnet-4-20250514-v1:0",
    "anthropic.claude-sonnet-4-5-20250929-v1:0",
    "anthropic.claude-opus-4-5-20251101-v1:0",
    "anthropic.claude-opus-4-6-v1",
    "amazon.nova-micro-v1:0",
    "amazon.nova-lite-v1:0",
    "amazon.nova-pro-v1:0",
    "mistral.pixtral-large-2502-v1:0",
];

/// The Tracia registry of embedding models.
pub(crate) const EMBEDDING_MODELS: &[(Provider, &[&str])] = &[
    (
        Provider::OpenAi,
        &[
            "text-embedding-3-small",
            "text-embedding-3-large",
            "text-embedding-ada-002",
        ],
    ),
    (Provider::Google, &["text-embedding-004"]),
    (
        Provider::AmazonBedrock,
        &["amazon.titan-embed-text-v2:0", "cohere.embed-english-v3"],
    ),
    (
        Provider::Voyage,
        &[
            "voyage-3",
            "voyage-3-large",
            "voyage-3-lite",
            "voyage-code-3",
            "voyage-finance-2",
            "voyage-law-2",
        ],
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_has_94_chat_and_12_embedding_models() {
        let chat = OPENAI_CHAT_MODELS.len()
            + ANTHROPIC_CHAT_MODELS.len()
            + GOOGLE_CHAT_MODELS.len()
            + BEDROCK_CHAT_MODELS.len();
        assert_eq!(chat, 94);
        assert_eq!(
            EMBEDDING_MODELS.iter().map(|(_, m)| m.len()).sum::<usize>(),
            12
        );
    }

    #[test]
    fn bedrock_ids_take_the_region_prefix() {
        let id = "anthropic.claude-sonnet-4-5-20250929-v1:0";
        assert_eq!(
            bedrock_model_id(id, "eu-central-1"),
            "eu.anthropic.claude-sonnet-4-5-20250929-v1:0"
        );
        assert_eq!(
            bedrock_model_id(&format!("us.{id}"), "ap-northeast-1"),
            format!("ap.{id}")
        );
        assert_eq!(
            bedrock_model_id("amazon.titan-embed-text-v2:0", "eu-west-1"),
            "eu.amazon.titan-embed-text-v2:0"
        );
        let arn = "arn:aws:bedrock:eu-central-1:123:inference-profile/x";
        assert_eq!(bedrock_model_id(arn, "us-east-1"), arn);
    }

    #[test]
    fn resolution_order() {
        let r = |m| Provider::resolve(m, None).map_err(|e| e.code());
        assert_eq!(r("chatgpt-4o-latest"), Ok(Provider::OpenAi));
        assert_eq!(r("text-embedding-004"), Ok(Provider::Google));
        assert_eq!(
            r("eu.anthropic.claude-3-haiku"),
            Ok(Provider::AmazonBedrock)
        );
        assert_eq!(r("meta.llama3"), Ok(Provider::AmazonBedrock));
        assert_eq!(r("o3-pro"), Ok(Provider::OpenAi));
        assert_eq!(r("claude-9"), Ok(Provider::Anthropic));
        assert_eq!(r("gemini-9"), Ok(Provider::Google));
        assert_eq!(r("voyage-9"), Ok(Provider::Voyage));
        assert_eq!(r("llama3"), Err(ErrorCode::UnsupportedModel));
        assert_eq!(
            Provider::resolve("llama3", Some(Provider::OpenAi)).unwrap(),
            Provider::OpenAi
        );
    }
}
