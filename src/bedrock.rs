//! The Amazon Bedrock wire formats.

use serde::Deserialize;
use serde_json::{Value, json};

use crate::chat::ErrorBody;
use crate::embedding::{EmbedRequest, EmbedResponse, EmbedWire, InputType, vector_from};

/// A model id as one URL path segment: percent-encoded once (`:` becomes `%3A`); SigV4
/// encodes it a second time in its canonical request.
pub(crate) fn model_path(model: &str) -> String {
    model
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Bedrock embeddings through `InvokeModel`: Amazon Titan and Cohere Embed bodies.
#[derive(Debug, Default)]
pub(crate) struct BedrockEmbed;

impl ErrorBody for BedrockEmbed {}

fn is_cohere(model: &str) -> bool {
    model.contains("cohere.")
}

impl EmbedWire for BedrockEmbed {
    fn url(&self, base_url: &str, model: &str) -> String {
        format!("{base_url}/model/{}/invoke", model_path(model))
    }

    fn authorize(
        &self,
        request: reqwest::RequestBuilder,
        api_key: &str,
    ) -> reqwest::RequestBuilder {
        request.bearer_auth(api_key)
    }

    /// Titan embeds one text per request; Cohere takes up to 96.
    fn max_batch(&self, model: &str) -> usize {
        if is_cohere(model) { 96 } else { 1 }
    }

    /// Titan v2 shortens to 256 or 512; Titan v1 and Cohere v3 have a fixed size.
    fn takes_dimensions(&self, model: &str) -> bool {
        model.contains("titan-embed-text-v2") || model.contains("cohere.embed-v4")
    }

    fn encode(&self, r: &EmbedRequest<'_>) -> Value {
        if is_cohere(r.model) {
            // Cohere requires input_type; documents are the common case.
            let input_type = match r.input_type {
                Some(InputType::Query) => "search_query",
                _ => "search_document",
            };
            let mut body = json!({"texts": r.texts, "input_type": input_type});
            if let Some(n) = r.dimensions {
                body["output_dimension"] = n.into();
            }
            return body;
        }
        let mut body = json!({"inputText": r.texts.first().map(String::as_str).unwrap_or("")});
        if let Some(n) = r.dimensions {
            body["dimensions"] = n.into();
        }
        body
    }

    fn decode(&self, body: &[u8]) -> Result<EmbedResponse, String> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Wire {
            /// Titan: one vector.
            embedding: Option<Value>,
            input_text_token_count: Option<u64>,
            /// Cohere: `[[..]]`, or `{"float": [[..]]}` when embedding types were asked.
            embeddings: Option<Value>,
        }
        let wire: Wire = serde_json::from_slice(body)
            .map_err(|e| format!("invalid Bedrock embeddings JSON: {e}"))?;
        let vectors = match (wire.embedding, wire.embeddings) {
            (Some(one), _) => vec![vector_from(&one)?],
            (None, Some(many)) => {
                let list = many.get("float").unwrap_or(&many);
                list.as_array()
                    .ok_or("embeddings is not a list")?
                    .iter()
                    .map(vector_from)
                    .collect::<Result<_, _>>()?
            }
            (None, None) => return Err("no embedding in the response".into()),
        };
        Ok(EmbedResponse {
            vectors,
            input_tokens: wire.input_text_token_count,
            model: None,
        })
    }
}
