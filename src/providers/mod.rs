//! The LLM providers: `Provider` and its resolution, what all wires share (`chat`:
//! normalized request and response, stream assembly; `sse`), and one module per
//! provider's wire format. Providers encode and decode; they know no span, client or
//! session.

pub(crate) mod anthropic;
pub(crate) mod bedrock;
pub(crate) mod chat;
pub(crate) mod embed;
pub(crate) mod gemini;
pub(crate) mod openai;
pub(crate) mod openai_responses;
pub(crate) mod provider;
pub(crate) mod sse;
pub(crate) mod voyage;

use crate::error::{Error, ErrorCode, Result};
use anthropic::AnthropicMessages;
use bedrock::BedrockConverse;
use chat::ChatWire;
use embed::EmbedWire;
use gemini::GeminiChat;
use openai::OpenAiChat;
use provider::Provider;

/// The chat wire format of `provider`.
pub(crate) fn chat_wire(provider: Provider, model: &str) -> Result<&'static dyn ChatWire> {
    match provider {
        Provider::OpenAi => Ok(&OpenAiChat),
        Provider::AmazonBedrock => Ok(&BedrockConverse),
        Provider::Google => Ok(&GeminiChat),
        Provider::Anthropic => Ok(&AnthropicMessages),
        Provider::Voyage => Err(Error::new(
            ErrorCode::UnsupportedModel,
            format!("Voyage offers embedding models only: use run_embedding for '{model}'"),
        )),
    }
}

/// The embeddings wire format of `provider`.
pub(crate) fn embed_wire(provider: Provider, model: &str) -> Result<&'static dyn EmbedWire> {
    match provider {
        Provider::OpenAi => Ok(&openai::OpenAiEmbed),
        Provider::Google => Ok(&gemini::GeminiEmbed),
        Provider::AmazonBedrock => Ok(&bedrock::BedrockEmbed),
        Provider::Voyage => Ok(&voyage::VoyageEmbed),
        Provider::Anthropic => Err(Error::new(
            ErrorCode::UnsupportedModel,
            format!(
                "Anthropic does not offer embedding models ('{model}'). Use OpenAI, Google, Amazon Bedrock or Voyage instead."
            ),
        )),
    }
}
