//! The Google Gemini (AI Studio) wire format.

use serde::Deserialize;
use serde_json::{Value, json};

use crate::chat::ErrorBody;
use crate::embedding::{EmbedRequest, EmbedResponse, EmbedWire, InputType};

/// The key goes in a header, never in `?key=`: URLs end up in logs.
const API_KEY_HEADER: &str = "x-goog-api-key";

/// `gemini-2.0-flash` and `models/gemini-2.0-flash` name the same model.
fn bare_model(model: &str) -> &str {
    model.strip_prefix("models/").unwrap_or(model)
}

/// Gemini embeddings (`batchEmbedContents`, one entry per text).
#[derive(Debug, Default)]
pub(crate) struct GeminiEmbed;

impl ErrorBody for GeminiEmbed {}

impl EmbedWire for GeminiEmbed {
    fn url(&self, base_url: &str, model: &str) -> String {
        format!(
            "{base_url}/v1beta/models/{}:batchEmbedContents",
            bare_model(model)
        )
    }

    fn authorize(
        &self,
        request: reqwest::RequestBuilder,
        api_key: &str,
    ) -> reqwest::RequestBuilder {
        request.header(API_KEY_HEADER, api_key)
    }

    fn takes_dimensions(&self, _model: &str) -> bool {
        true
    }

    /// The API's limit on entries per batch.
    fn max_batch(&self, _model: &str) -> usize {
        100
    }

    fn encode(&self, r: &EmbedRequest<'_>) -> Value {
        let model = format!("models/{}", bare_model(r.model));
        let requests: Vec<Value> = r
            .texts
            .iter()
            .map(|text| {
                let mut entry = json!({"model": model, "content": {"parts": [{"text": text}]}});
                if let Some(n) = r.dimensions {
                    entry["outputDimensionality"] = n.into();
                }
                if let Some(kind) = r.input_type {
                    entry["taskType"] = match kind {
                        InputType::Query => "RETRIEVAL_QUERY",
                        InputType::Document => "RETRIEVAL_DOCUMENT",
                    }
                    .into();
                }
                entry
            })
            .collect();
        json!({ "requests": requests })
    }

    /// Gemini reports no token count for embeddings.
    fn decode(&self, body: &[u8]) -> Result<EmbedResponse, String> {
        #[derive(Deserialize)]
        struct Wire {
            #[serde(default)]
            embeddings: Vec<Item>,
        }
        #[derive(Deserialize)]
        struct Item {
            values: Vec<f64>,
        }
        let wire: Wire = serde_json::from_slice(body)
            .map_err(|e| format!("invalid Gemini embeddings JSON: {e}"))?;
        Ok(EmbedResponse {
            vectors: wire.embeddings.into_iter().map(|e| e.values).collect(),
            ..EmbedResponse::default()
        })
    }
}
