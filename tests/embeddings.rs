//! `run_embedding` for every embedding provider, replaying recorded (and, where the
//! recordings lack a case, reference-built) exchanges: vectors, usage, what was sent,
//! the span at a real OTLP receiver and at a fake Tracia API, and the error paths.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::{FakeProvider, OtlpReceiver, check_span_payload, install, load_fixture, pipeline};
use tracia::{ErrorCode, InputType, Provider, RunEmbedding, Tracia};

const KEY: &str = "tr_test_key_0123456789abcdef";
const WAIT: Duration = Duration::from_secs(10);

/// A client whose every provider points at the fake server.
fn client(fake: &FakeProvider) -> Tracia {
    support::keep_callsite_interest_shared();
    Tracia::builder()
        .without_env()
        .with_api_key(Provider::OpenAi, "sk-test-0123456789abcdefghijklmnop")
        .with_api_key(Provider::Google, "AIzaSyTest0123456789")
        .with_api_key(Provider::AmazonBedrock, "bedrock-api-key-test")
        .with_api_key(Provider::Voyage, "pa-test-voyage")
        .with_base_url(Provider::OpenAi, fake.base_url())
        .with_base_url(Provider::Google, fake.url())
        .with_base_url(Provider::AmazonBedrock, fake.url())
        .with_base_url(Provider::Voyage, fake.base_url())
        .build()
        .unwrap()
}

fn vector_len(fixture: &str, pointer: &str) -> usize {
    let body: Value = serde_json::from_slice(&load_fixture(fixture).response_body).unwrap();
    body.pointer(pointer).unwrap().as_array().unwrap().len()
}

#[tokio::test(flavor = "multi_thread")]
async fn openai_embedding_decodes_base64_and_reaches_otlp_and_tracia() {
    let fake = FakeProvider::start().await;
    let otlp = OtlpReceiver::start().await;
    let cloud = support::FakeTracia::start(KEY).await;
    fake.enqueue_fixture("openai/embeddings-1");
    let guard = pipeline(Some(&otlp), Some((&cloud, KEY)));
    let _sub = install(&guard);

    let result = client(&fake)
        .run_embedding(
            RunEmbedding::new("text-embedding-ada-002")
                .input("Tell me a joke about opentelemetry")
                .tag("search")
                .user_id("user_42"),
        )
        .await
        .unwrap();
    // ada-002 vectors have 1536 values; the recording sent them as base64 f32s.
    assert_eq!(result.embeddings.len(), 1);
    assert_eq!(result.embeddings[0].values.len(), 1536);
    assert_eq!(result.embeddings[0].index, 0);
    assert!(result.embeddings[0].values.iter().all(|v| v.abs() < 1.0));
    assert_eq!(
        (result.usage.input_tokens, result.usage.total_tokens),
        (8, 8)
    );
    assert_eq!(result.provider, Provider::OpenAi);
    assert_eq!(
        result.response_model.as_deref(),
        Some("text-embedding-ada-002")
    );
    // Priced from the table: 8 tokens × $1e-7.
    assert!((result.cost.unwrap() - 8.0 * 1e-7).abs() < 1e-15);

    let sent = &fake.requests().await[0];
    assert_eq!(sent.path, "/v1/embeddings");
    assert_eq!(
        sent.body,
        json!({"model": "text-embedding-ada-002", "input": ["Tell me a joke about opentelemetry"], "encoding_format": "base64"})
    );
    assert!(sent.header("traceparent").is_some());

    guard.flush().await;
    let spans = otlp.wait_for_spans(1, WAIT).await;
    let span = &spans[0];
    assert_eq!(span.name, "embeddings text-embedding-ada-002");
    assert!(span.is_client());
    assert_eq!(span.attr_str("gen_ai.operation.name"), Some("embeddings"));
    assert_eq!(span.attr_str("gen_ai.provider.name"), Some("openai"));
    assert_eq!(
        span.attr_i64("gen_ai.embeddings.dimension.count"),
        Some(1536)
    );
    assert_eq!(span.attr_i64("gen_ai.usage.input_tokens"), Some(8));
    assert!(!span.has_attr("gen_ai.usage.output_tokens"));
    assert_eq!(
        span.attr_str_array("gen_ai.request.encoding_formats"),
        Some(vec!["float".to_string()])
    );
    assert_eq!(
        format!("sp_{}", span.span_id),
        result.span_id,
        "result carries the exported span id"
    );

    let payloads = cloud.wait_for_spans(1, WAIT).await;
    let p = &payloads[0];
    check_span_payload(p).unwrap();
    assert_eq!(p["spanKind"], "EMBEDDING");
    assert_eq!(
        p["input"],
        json!({"text": ["Tell me a joke about opentelemetry"]})
    );
    assert_eq!(
        p["output"],
        json!({"dimensions": 1536, "count": 1}).to_string()
    );
    assert_eq!(
        (p["inputTokens"].as_i64(), p["outputTokens"].as_i64()),
        (Some(8), Some(0))
    );
    assert_eq!(p["tags"], json!(["search"]));
}

#[tokio::test]
async fn gemini_embedding_uses_batch_embed_with_header_key() {
    let fake = FakeProvider::start().await;
    fake.enqueue_fixture("google/embed");
    let result = client(&fake)
        .run_embedding(
            RunEmbedding::new("gemini-embedding-001")
                .provider(Provider::Google)
                .input("Why is the sky blue?")
                .input_type(InputType::Document)
                .dimensions(768),
        )
        .await
        .unwrap();
    assert_eq!(result.embeddings.len(), 1);
    assert_eq!(
        result.embeddings[0].values.len(),
        vector_len("google/embed", "/embeddings/0/values")
    );
    // Gemini counts no embedding tokens: no usage, so no cost, never a guess.
    assert_eq!(result.usage.total_tokens, 0);
    assert_eq!(result.cost, None);

    let sent = &fake.requests().await[0];
    assert_eq!(
        sent.path,
        "/v1beta/models/gemini-embedding-001:batchEmbedContents"
    );
    assert!(sent.query.is_none(), "the key never goes in the URL");
    assert_eq!(sent.header("x-goog-api-key"), Some("AIzaSyTest0123456789"));
    assert_eq!(
        sent.body,
        json!({"requests": [{
            "model": "models/gemini-embedding-001",
            "content": {"parts": [{"text": "Why is the sky blue?"}]},
            "taskType": "RETRIEVAL_DOCUMENT",
            "outputDimensionality": 768,
        }]})
    );
}

#[tokio::test]
async fn titan_embeds_one_text_per_request_and_keeps_input_order() {
    let fake = FakeProvider::start().await;
    fake.enqueue_fixture("bedrock/titan-embed-1");
    fake.enqueue_fixture("bedrock/titan-embed-2");
    let texts = ["Why is the sky blue?", "What is the capital of France?"];
    let result = client(&fake)
        .run_embedding(
            RunEmbedding::new("amazon.titan-embed-text-v2:0")
                .inputs(texts)
                .dimensions(256),
        )
        .await
        .unwrap();
    assert_eq!(result.provider, Provider::AmazonBedrock);
    assert_eq!(result.embeddings.len(), 2);
    assert!(result.embeddings.iter().all(|e| e.values.len() == 256));
    assert_eq!(
        result
            .embeddings
            .iter()
            .map(|e| e.index)
            .collect::<Vec<_>>(),
        [0, 1]
    );
    // Token counts of both requests add up; priced from the table ($2e-8 per token).
    assert_eq!(result.usage.input_tokens, 13);
    assert!((result.cost.unwrap() - 13.0 * 2e-8).abs() < 1e-15);

    let mut sent = fake.requests().await;
    assert_eq!(sent.len(), 2);
    sent.sort_by_key(|r| r.body["inputText"].as_str().map(str::to_owned));
    for (request, text) in sent.iter().zip([texts[1], texts[0]]) {
        // The id is sent as given (no cross-region prefix) and encoded once.
        assert_eq!(request.path, "/model/amazon.titan-embed-text-v2%3A0/invoke");
        assert_eq!(request.body, json!({"inputText": text, "dimensions": 256}));
        assert_eq!(
            request.header("authorization"),
            Some("Bearer bedrock-api-key-test")
        );
    }
}

#[tokio::test]
async fn cohere_on_bedrock_batches_with_an_input_type() {
    let fake = FakeProvider::start().await;
    fake.enqueue_fixture("bedrock/cohere-embed");
    let result = client(&fake)
        .run_embedding(
            RunEmbedding::new("cohere.embed-english-v3")
                .inputs(["Why is the sky blue?", "What is the capital of France?"]),
        )
        .await
        .unwrap();
    assert_eq!(result.embeddings.len(), 2);
    assert_eq!(result.embeddings[1].values.len(), 1024);
    let sent = &fake.requests().await[0];
    assert_eq!(sent.path, "/model/cohere.embed-english-v3/invoke");
    assert_eq!(
        sent.body,
        load_fixture("bedrock/cohere-embed").request_body,
        "texts in one request, input_type search_document by default"
    );
}

#[tokio::test]
async fn voyage_sorts_by_index_and_sends_input_type() {
    let fake = FakeProvider::start().await;
    fake.enqueue_fixture("voyage/embeddings");
    let result = client(&fake)
        .run_embedding(
            RunEmbedding::new("voyage-3")
                .inputs(["Why is the sky blue?", "What is the capital of France?"])
                .input_type(InputType::Document),
        )
        .await
        .unwrap();
    let body: Value =
        serde_json::from_slice(&load_fixture("voyage/embeddings").response_body).unwrap();
    // The fixture lists index 1 first; the result is in input order.
    let first = &body["data"][1]["embedding"];
    assert_eq!(
        json!(result.embeddings[0].values),
        *first,
        "vector 0 is the item with index 0"
    );
    assert_eq!(result.usage.total_tokens, 13);
    let sent = &fake.requests().await[0];
    assert_eq!(sent.path, "/v1/embeddings");
    assert_eq!(sent.body, load_fixture("voyage/embeddings").request_body);
    assert_eq!(sent.header("authorization"), Some("Bearer pa-test-voyage"));
}

#[tokio::test]
async fn misuse_is_a_clear_error_before_any_request() {
    let fake = FakeProvider::start().await;
    let tracia = client(&fake);
    let anthropic = tracia
        .run_embedding(RunEmbedding::new("claude-3-haiku-20240307").input("x"))
        .await
        .unwrap_err();
    assert_eq!(anthropic.code(), ErrorCode::UnsupportedModel);
    assert!(
        anthropic
            .to_string()
            .contains("Anthropic does not offer embedding models"),
        "{anthropic}"
    );
    for model in [
        "text-embedding-ada-002",
        "voyage-3",
        "cohere.embed-english-v3",
    ] {
        let err = tracia
            .run_embedding(RunEmbedding::new(model).input("x").dimensions(256))
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidRequest, "{model}");
        assert!(err.to_string().contains(model), "{err}");
    }
    let chat_to_voyage = tracia
        .run_local(tracia::RunLocal::new("voyage-3").user("hi"))
        .await
        .unwrap_err();
    assert_eq!(chat_to_voyage.code(), ErrorCode::UnsupportedModel);
    assert_eq!(fake.request_count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn provider_error_is_typed_and_an_error_span() {
    let fake = FakeProvider::start().await;
    let otlp = OtlpReceiver::start().await;
    fake.enqueue_with_headers(
        429,
        "application/json",
        &[("retry-after", "3")],
        support::openai_error_body(
            "Rate limit reached",
            "requests",
            Some("rate_limit_exceeded"),
        ),
    );
    let guard = pipeline(Some(&otlp), None);
    let _sub = install(&guard);
    let err = client(&fake)
        .run_embedding(RunEmbedding::new("text-embedding-3-small").input("x"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::ProviderError);
    assert_eq!(err.status(), Some(429));
    assert_eq!(err.retry_after(), Some(Duration::from_secs(3)));
    assert!(err.to_string().contains("Rate limit reached"), "{err}");

    guard.flush().await;
    let spans = otlp.wait_for_spans(1, WAIT).await;
    assert!(spans[0].is_error());
    assert_eq!(spans[0].attr_str("error.type"), Some("429"));
}

#[tokio::test]
async fn every_openai_embeddings_recording_decodes() {
    let fake = FakeProvider::start().await;
    let tracia = client(&fake);
    for n in 1..=4 {
        let name = format!("openai/embeddings-{n}");
        fake.enqueue_fixture(&name);
        let recorded: Value = serde_json::from_slice(&load_fixture(&name).response_body).unwrap();
        let result = tracia
            .run_embedding(
                RunEmbedding::new("text-embedding-ada-002")
                    .input("Tell me a joke about opentelemetry"),
            )
            .await
            .unwrap();
        assert_eq!(result.embeddings[0].values.len(), 1536, "{name}");
        assert_eq!(result.usage.input_tokens, 8, "{name}");
        assert_eq!(
            result.response_model.as_deref(),
            recorded["model"].as_str(),
            "{name}"
        );
    }
    assert_eq!(fake.pending(), 0);
}
