//! The LLM providers: `Provider` and its resolution, what all wires share (`chat`:
//! normalized request and response, stream assembly; `sse`), and one module per
//! provider's wire format. Providers encode and decode; they know no span, client or
//! session.

pub(crate) mod anthropic;
pub(crate) mod bedrock;
pub(crate) mod chat;
pub(crate) mod gemini;
pub(crate) mod openai;
pub(crate) mod openai_responses;
pub(crate) mod provider;
pub(crate) mod sse;
pub(crate) mod voyage;
