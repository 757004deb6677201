//! Embeddings: `run_embedding`, its input and result, and the wire trait each
//! embedding provider implements.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use serde::Serialize;
use tracing::Instrument;

use crate::call::client::Tracia;
use crate::call::run::CallOptions;
use crate::call::run::call_option_setters;
use crate::call::span::{CallSpan, EmbeddingsStart, Placement};
use crate::error::{Error, ErrorCode, Result};
use crate::providers::embed::{EmbedRequest, EmbedResponse, EmbedWire, InputType};
use crate::providers::embed_wire;
use crate::providers::provider::Provider;
use crate::usage::Usage;
use crate::{ids, pricing, transport};

/// Requests of one embeddings call in flight at once, when a provider takes fewer
/// texts per request than the call has (Titan takes one).
const CONCURRENT_REQUESTS: usize = 4;

/// One `run_embedding` call: a model and one or more texts.
///
/// ```
/// use tracia::RunEmbedding;
/// let input = RunEmbedding::new("text-embedding-3-small")
///     .inputs(["first text", "second text"])
///     .dimensions(256)
///     .tag("search");
/// # drop(input);
/// ```
#[derive(Debug, Clone, Default)]
pub struct RunEmbedding {
    pub(crate) model: String,
    pub(crate) texts: Vec<String>,
    pub(crate) dimensions: Option<u32>,
    pub(crate) input_type: Option<InputType>,
    /// The options every kind of call shares.
    pub(crate) options: CallOptions,
}

impl RunEmbedding {
    call_option_setters!(provider; options);

    /// A call to `model` with no input yet.
    pub fn new(model: impl Into<String>) -> Self {
        Self {
            model: model.into(),
            ..Self::default()
        }
    }

    /// Adds one text to embed.
    pub fn input(mut self, text: impl Into<String>) -> Self {
        self.texts.push(text.into());
        self
    }

    /// Adds texts to embed; each gets its own vector, in order.
    pub fn inputs<I, S>(mut self, texts: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.texts.extend(texts.into_iter().map(Into::into));
        self
    }

    /// The vector size, for models that can shorten their vectors
    /// (`text-embedding-3-*`, Gemini, Titan v2).
    pub fn dimensions(mut self, n: u32) -> Self {
        self.dimensions = Some(n);
        self
    }

    /// What the texts are for (retrieval models embed queries and documents apart).
    pub fn input_type(mut self, input_type: InputType) -> Self {
        self.input_type = Some(input_type);
        self
    }
}

/// One vector of an [`EmbeddingResult`].
///
/// ```
/// let e = tracia::Embedding { values: vec![0.1, 0.2], index: 0 };
/// assert_eq!(e.values.len(), 2);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Embedding {
    /// The vector.
    pub values: Vec<f64>,
    /// The position of its text in the input.
    pub index: usize,
}

/// The result of [`Tracia::run_embedding`].
///
/// ```no_run
/// # async fn demo(tracia: tracia::Tracia) -> Result<(), tracia::Error> {
/// let result = tracia.run_embedding(tracia::RunEmbedding::new("text-embedding-3-small")
///     .input("hello")).await?;
/// println!("{} dims, {} tokens, span {}", result.embeddings[0].values.len(),
///     result.usage.input_tokens, result.span_id);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct EmbeddingResult {
    /// One vector per input text, in input order.
    pub embeddings: Vec<Embedding>,
    /// The call's span id (`sp_` + 16 hex).
    pub span_id: String,
    /// The call's trace id (`tr_…`).
    pub trace_id: String,
    /// The call's duration, the same as its span's.
    pub latency_ms: u64,
    /// Input tokens (`input_tokens` = `total_tokens`); zero when the provider does not
    /// count them (Gemini, Cohere).
    pub usage: Usage,
    /// Cost in USD, when the model is priced and its tokens counted.
    pub cost: Option<f64>,
    /// The provider that served the call.
    pub provider: Provider,
    /// The model as requested.
    pub model: String,
    /// The model the provider says it used.
    pub response_model: Option<String>,
}

impl Tracia {
    /// Embeds one or more texts. The call is a CLIENT span `embeddings {model}` with the
    /// GenAI embeddings attributes; Tracia shows it as an `EMBEDDING` span.
    ///
    /// Texts beyond what one provider request takes are sent in several requests (a
    /// few at once) and come back in input order.
    ///
    /// ```no_run
    /// # async fn demo(tracia: tracia::Tracia) -> Result<(), tracia::Error> {
    /// let result = tracia
    ///     .run_embedding(tracia::RunEmbedding::new("text-embedding-3-small").inputs(["a", "b"]))
    ///     .await?;
    /// assert_eq!(result.embeddings.len(), 2);
    /// # Ok(()) }
    /// ```
    pub async fn run_embedding(&self, mut input: RunEmbedding) -> Result<EmbeddingResult> {
        let placement = validate(&input)?;
        crate::propagation::ambient_conversation()
            .fill(&mut input.options.session_id, &mut input.options.user_id);
        let provider = Provider::resolve(&input.model, input.options.provider)?;
        let wire = embed_wire(provider, &input.model)?;
        // Embedding ids are sent as given: Bedrock's on-demand embedding models have no
        // cross-region profiles (the Tracia SDKs prefix them anyway, and fail).
        let wire_model = input.model.clone();
        if let Some(n) = input.dimensions
            && !wire.takes_dimensions(&wire_model)
        {
            return Err(Error::invalid(format!(
                "Model '{}' does not take a dimensions setting ({n} was given)",
                input.model
            )));
        }
        let auth = self.auth(provider, input.options.provider_api_key.take())?;
        let base = self.base_url(provider);
        let call = CallSpan::start_embeddings(
            EmbeddingsStart {
                provider,
                server: base,
                input: &input,
                send: input.options.send_trace.unwrap_or(true),
                placement,
            },
            self.span_settings(),
        );
        let timeout = input
            .options
            .timeout
            .unwrap_or_else(|| self.default_timeout());
        let max_answer = input
            .options
            .max_answer_bytes
            .unwrap_or_else(|| self.max_answer_bytes());
        let requests = input
            .texts
            .chunks(wire.max_batch(&wire_model))
            .map(|texts| {
                let request = EmbedRequest {
                    model: &wire_model,
                    texts,
                    dimensions: input.dimensions,
                    input_type: input.input_type,
                };
                let url = wire.url(base.as_str().trim_end_matches('/'), &wire_model);
                self.provider_request(
                    url,
                    &wire.encode(&request),
                    &call.context,
                    &auth,
                    |r, key| wire.authorize(r, key),
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let expected = input.texts.len();
        let sent = futures::stream::iter(requests)
            .map(|request| {
                self.embed_once(request, wire, provider, (timeout, max_answer), expected)
            })
            .buffered(CONCURRENT_REQUESTS)
            .try_collect::<Vec<_>>();
        let outcome = tokio::time::timeout(timeout, sent.instrument(call.span.clone()))
            .await
            .unwrap_or_else(|_| Err(transport::timeout_error(timeout)))
            .and_then(|parts| merge(parts, input.texts.len()));
        let response = match outcome {
            Ok(response) => response,
            Err(error) => {
                call.fail(&error);
                return Err(error);
            }
        };
        let usage = response.input_tokens.map(|n| Usage {
            input_tokens: n,
            total_tokens: n,
            ..Usage::default()
        });
        let cost = usage
            .as_ref()
            .and_then(|u| pricing::cost_usd(&input.model, u));
        let dimensions = response.vectors.first().map_or(0, Vec::len);
        call.record_embeddings(
            dimensions,
            response.vectors.len(),
            response.model.as_deref(),
            usage.as_ref(),
            cost,
        );
        Ok(EmbeddingResult {
            embeddings: response
                .vectors
                .into_iter()
                .enumerate()
                .map(|(index, values)| Embedding { values, index })
                .collect(),
            span_id: ids::format_span_id(call.span_id),
            trace_id: ids::format_trace_id(call.trace_id),
            latency_ms: call.end(),
            usage: usage.unwrap_or_default(),
            cost,
            provider,
            model: input.model,
            response_model: response.model,
        })
    }

    async fn embed_once(
        &self,
        request: reqwest::Request,
        wire: &'static dyn EmbedWire,
        provider: Provider,
        (timeout, max_answer): (Duration, usize),
        expected: usize,
    ) -> Result<EmbedResponse> {
        let response = transport::send(self.http(), request, wire, provider, timeout).await?;
        let body = transport::read_answer(response, max_answer, timeout).await?;
        let decoded = wire.decode(&body).map_err(embedding_error)?;
        if decoded.vectors.is_empty() || decoded.vectors.len() > expected {
            return Err(embedding_error(format!(
                "{provider} returned {} vectors",
                decoded.vectors.len()
            )));
        }
        Ok(decoded)
    }
}

fn embedding_error(msg: String) -> Error {
    Error::new(
        ErrorCode::ProviderError,
        format!("Embedding provider error: {msg}"),
    )
}

/// Joins the answers of a call's requests, checking that every text got a vector.
fn merge(parts: Vec<EmbedResponse>, expected: usize) -> Result<EmbedResponse> {
    let mut merged = EmbedResponse::default();
    for part in parts {
        merged.vectors.extend(part.vectors);
        merged.input_tokens = match (merged.input_tokens, part.input_tokens) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        };
        merged.model = merged.model.or(part.model);
    }
    if merged.vectors.len() != expected {
        return Err(embedding_error(format!(
            "got {} vectors for {expected} inputs",
            merged.vectors.len()
        )));
    }
    Ok(merged)
}

/// The checks that fail before any I/O, and where the span goes.
fn validate(input: &RunEmbedding) -> Result<Placement> {
    crate::providers::provider::check_model(&input.model)?;
    if input.texts.is_empty() {
        return Err(Error::invalid("input is required and cannot be empty"));
    }
    if let Some(i) = input.texts.iter().position(|t| t.trim().is_empty()) {
        return Err(Error::invalid(format!(
            "input {i} is empty: every text to embed needs content"
        )));
    }
    if input.dimensions == Some(0) {
        return Err(Error::invalid("dimensions must be at least 1"));
    }
    Placement::default().with_ids(
        input.options.span_id.as_deref(),
        input.options.trace_id.as_deref(),
        input.options.parent_span_id.as_deref(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_input_is_rejected_before_io() {
        let err = validate(&RunEmbedding::new("m")).unwrap_err();
        assert!(err.to_string().contains("input is required"), "{err}");
        let err = validate(&RunEmbedding::new("m").inputs(["a", "  "])).unwrap_err();
        assert!(err.to_string().contains("input 1 is empty"), "{err}");
        let err = validate(&RunEmbedding::new("m").input("a").dimensions(0)).unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidRequest);
    }
}
