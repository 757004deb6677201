//! The Voyage AI embeddings wire format (its response is OpenAI's).

use serde_json::{Value, json};

use crate::providers::chat::ErrorBody;
use crate::providers::embed::{EmbedRequest, EmbedResponse, EmbedWire, InputType};

/// Voyage embeddings.
#[derive(Debug, Default)]
pub(crate) struct VoyageEmbed;

impl ErrorBody for VoyageEmbed {}

impl EmbedWire for VoyageEmbed {
    fn url(&self, base_url: &str, _model: &str) -> String {
        format!("{base_url}/embeddings")
    }

    /// Only Voyage's Matryoshka models shorten their vectors (`output_dimension`).
    fn takes_dimensions(&self, model: &str) -> bool {
        ["voyage-3-large", "voyage-code-3", "voyage-3.5", "voyage-4"]
            .iter()
            .any(|m| model.starts_with(m))
    }

    /// Voyage takes at most 1000 texts per request.
    fn max_batch(&self, _model: &str) -> usize {
        1000
    }

    fn encode(&self, r: &EmbedRequest<'_>) -> Value {
        let mut body = json!({"model": r.model, "input": r.texts});
        if let Some(n) = r.dimensions {
            body["output_dimension"] = n.into();
        }
        if let Some(kind) = r.input_type {
            body["input_type"] = match kind {
                InputType::Query => "query",
                InputType::Document => "document",
            }
            .into();
        }
        body
    }

    fn decode(&self, body: &[u8]) -> Result<EmbedResponse, String> {
        crate::providers::openai::decode_embeddings(body)
    }
}
