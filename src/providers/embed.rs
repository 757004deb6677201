//! What every embeddings wire shares: the request and answer of one provider request,
//! the `EmbedWire` trait each embedding provider implements, and vector decoding.

use serde_json::Value;

use crate::transport::ErrorBody;

/// What the texts are for. Retrieval models embed queries and documents differently;
/// providers without the notion ignore it.
///
/// ```
/// let input = tracia::RunEmbedding::new("voyage-3").input("what is OTLP?")
///     .input_type(tracia::InputType::Query);
/// # drop(input);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum InputType {
    /// A search query.
    Query,
    /// A document to be searched.
    Document,
}

/// One provider request's worth of an embeddings call.
#[derive(Debug)]
pub(crate) struct EmbedRequest<'a> {
    /// The model id on the wire.
    pub model: &'a str,
    pub texts: &'a [String],
    pub dimensions: Option<u32>,
    pub input_type: Option<InputType>,
}

/// A provider's embeddings answer, vectors in request order.
#[derive(Debug, Default)]
pub(crate) struct EmbedResponse {
    pub vectors: Vec<Vec<f64>>,
    pub input_tokens: Option<u64>,
    pub model: Option<String>,
}

/// A provider's embeddings wire format; sending, batching, spans and errors are shared.
pub(crate) trait EmbedWire: ErrorBody {
    /// The URL of an embeddings request under `base_url` (no trailing slash).
    fn url(&self, base_url: &str, model: &str) -> String;
    /// Adds the provider's key-based authentication to a request: a bearer token unless
    /// the provider says otherwise.
    fn authorize(
        &self,
        request: reqwest::RequestBuilder,
        api_key: &str,
    ) -> reqwest::RequestBuilder {
        request.bearer_auth(api_key)
    }
    /// The most texts one request may carry.
    fn max_batch(&self, _model: &str) -> usize {
        usize::MAX
    }
    /// Whether the model can shorten its vectors to a requested size.
    fn takes_dimensions(&self, model: &str) -> bool;
    /// The request body.
    fn encode(&self, request: &EmbedRequest<'_>) -> Value;
    /// The response body.
    fn decode(&self, body: &[u8]) -> std::result::Result<EmbedResponse, String>;
}

/// Reads a vector that is either a JSON array of numbers or base64 of little-endian
/// `f32`s (OpenAI's `encoding_format: "base64"`, a quarter of the JSON size).
pub(crate) fn vector_from(value: &Value) -> std::result::Result<Vec<f64>, String> {
    match value {
        Value::Array(items) => items
            .iter()
            .map(|v| v.as_f64().ok_or_else(|| format!("non-numeric value {v}")))
            .collect(),
        Value::String(b64) => {
            use base64::Engine;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|e| format!("invalid base64 vector: {e}"))?;
            if bytes.len() % 4 != 0 {
                return Err(format!("base64 vector of {} bytes", bytes.len()));
            }
            Ok(bytes
                .chunks_exact(4)
                .map(|c| f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]])))
                .collect())
        }
        other => Err(format!("unexpected vector {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_read_from_json_and_base64() {
        let floats = [0.5f32, -1.25, 3.0];
        let bytes: Vec<u8> = floats.iter().flat_map(|f| f.to_le_bytes()).collect();
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
        assert_eq!(
            vector_from(&Value::String(b64)).unwrap(),
            vec![0.5, -1.25, 3.0]
        );
        assert_eq!(
            vector_from(&serde_json::json!([0.5, 2])).unwrap(),
            vec![0.5, 2.0]
        );
        assert!(vector_from(&Value::String("AAA".into())).is_err());
        assert!(vector_from(&serde_json::json!(["x"])).is_err());
    }
}
