//! AWS event-stream framing (`application/vnd.amazon.eventstream`, Bedrock
//! ConverseStream): binary frames decoded into the same named events as SSE, so a
//! wire's `decode_event` reads both alike.

use std::pin::Pin;
use std::time::Duration;

use aws_smithy_eventstream::frame::read_message_from;
use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt, stream};

use crate::error::{Error, ErrorCode, Result};
use crate::providers::sse::SseEvent;
use crate::transport::transport_error;

/// The largest frame accepted: AWS event-stream messages are at most 16 MiB. A prelude
/// declaring more is refused at once, before its bytes are waited for and buffered.
const MAX_FRAME_LEN: usize = 16 * 1024 * 1024;

struct Decoder {
    body: Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>,
    /// Bytes received and not yet decoded: always from the start of a frame.
    buf: BytesMut,
    failed: bool,
}

/// Decodes a response body of AWS event-stream frames. A frame with a bad checksum or
/// a declared length over 16 MiB, an `exception` frame, and a body that ends inside a
/// frame each yield one error item, after which the stream ends; it never ends quietly
/// half-way.
pub(crate) fn events(
    body: impl Stream<Item = reqwest::Result<Bytes>> + Send + 'static,
    timeout: Duration,
) -> impl Stream<Item = Result<SseEvent>> + Send + 'static {
    let start = Decoder {
        body: Box::pin(body),
        buf: BytesMut::new(),
        failed: false,
    };
    stream::unfold(start, move |mut d| async move {
        if d.failed {
            return None;
        }
        let item = loop {
            // A frame starts with its total length (prelude and checksums included).
            if let Some(len) = d.buf.first_chunk::<4>() {
                let len = u32::from_be_bytes(*len) as usize;
                if len > MAX_FRAME_LEN {
                    break Err(provider_error(format!(
                        "malformed event stream: a frame of {len} bytes (at most {MAX_FRAME_LEN})"
                    )));
                }
                if d.buf.len() >= len {
                    let frame = d.buf.split_to(len).freeze();
                    break match read_message_from(frame) {
                        Ok(message) => to_event(&message),
                        Err(e) => Err(provider_error(format!("malformed event stream: {e}"))),
                    };
                }
            }
            match d.body.next().await {
                Some(Ok(chunk)) => d.buf.extend_from_slice(&chunk),
                Some(Err(e)) => break Err(transport_error(e, timeout)),
                None if !d.buf.is_empty() => {
                    break Err(provider_error(
                        "the event stream ended in the middle of a message".to_owned(),
                    ));
                }
                None => return None,
            }
        };
        d.failed = item.is_err();
        Some((item, d))
    })
}

fn provider_error(detail: String) -> Error {
    Error::new(
        ErrorCode::ProviderError,
        format!("LLM provider error: {detail}"),
    )
}

/// An `event` frame becomes its `:event-type` and payload; an `exception` (or `error`)
/// frame becomes the error it reports.
fn to_event(message: &aws_smithy_types::event_stream::Message) -> Result<SseEvent> {
    let header = |name: &str| {
        message
            .headers()
            .iter()
            .find(|h| h.name().as_str() == name)
            .and_then(|h| h.value().as_string().ok())
            .map(|v| v.as_str().to_owned())
    };
    let payload = String::from_utf8_lossy(message.payload());
    match header(":message-type").as_deref() {
        Some("event") => Ok(SseEvent {
            event: header(":event-type").unwrap_or_default(),
            data: std::str::from_utf8(message.payload())
                .map_err(|e| provider_error(format!("event payload is not valid UTF-8: {e}")))?
                .to_owned(),
        }),
        Some("exception") => {
            // Exception payloads are `{"message": "..."}` by the AWS event-stream convention.
            let text = serde_json::from_slice::<serde_json::Value>(message.payload())
                .ok()
                .and_then(|v| v.get("message")?.as_str().map(str::to_owned))
                .unwrap_or_else(|| payload.into_owned());
            let kind = header(":exception-type").unwrap_or_else(|| "exception".into());
            Err(provider_error(format!("{kind}: {text}")))
        }
        Some("error") => Err(provider_error(format!(
            "{}: {}",
            header(":error-code").unwrap_or_else(|| "error".into()),
            header(":error-message").unwrap_or_default()
        ))),
        other => Err(provider_error(format!(
            "malformed event stream: unexpected message type {other:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_smithy_eventstream::frame::write_message_to;
    use aws_smithy_types::event_stream::{Header, HeaderValue, Message};

    fn frame(headers: &[(&'static str, &'static str)], payload: &'static str) -> Vec<u8> {
        let message = headers.iter().fold(Message::new(payload), |m, (k, v)| {
            m.add_header(Header::new(*k, HeaderValue::String((*v).into())))
        });
        let mut out = Vec::new();
        write_message_to(&message, &mut out).unwrap();
        out
    }

    async fn decode(chunks: Vec<Vec<u8>>) -> Vec<Result<SseEvent>> {
        let body = stream::iter(chunks.into_iter().map(|c| Ok(Bytes::from(c))));
        events(body, Duration::from_secs(1)).collect().await
    }

    fn event(name: &'static str, data: &'static str) -> Vec<u8> {
        frame(&[(":message-type", "event"), (":event-type", name)], data)
    }

    #[tokio::test]
    async fn frames_split_anywhere_decode_in_order() {
        let body = [event("a", "{\"x\":1}"), event("b", "{}")].concat();
        // One byte at a time: every frame straddles many chunks.
        let items = decode(body.iter().map(|b| vec![*b]).collect()).await;
        let got: Vec<(String, String)> = items
            .into_iter()
            .map(|i| i.map(|e| (e.event, e.data)).unwrap())
            .collect();
        assert_eq!(
            got,
            [("a".into(), "{\"x\":1}".into()), ("b".into(), "{}".into())]
        );
    }

    #[tokio::test]
    async fn a_body_ending_inside_a_frame_is_an_error() {
        let whole = event("a", "{}");
        // Cut inside the prelude, and after it (the decoder then holds the prelude).
        for cut in [5, 14, whole.len() - 1] {
            let items = decode(vec![whole[..cut].to_vec()]).await;
            assert_eq!(items.len(), 1, "cut at {cut}");
            let e = items.into_iter().next().unwrap().unwrap_err();
            assert_eq!(e.code(), ErrorCode::ProviderError);
            assert!(e.message().contains("ended in the middle"), "{e}");
        }
        assert!(decode(vec![]).await.is_empty(), "an empty body just ends");
    }

    #[tokio::test]
    async fn a_hostile_length_is_refused_before_its_bytes_are_read() {
        // 4 GiB declared, then a body that never ends.
        let prelude = Bytes::from_static(&[0xff, 0xff, 0xff, 0xf0]);
        let body = stream::once(async move { Ok(prelude) })
            .chain(stream::repeat_with(|| Ok(Bytes::from(vec![0_u8; 1024]))));
        let items: Vec<_> = events(body, Duration::from_secs(1)).collect().await;
        assert_eq!(items.len(), 1);
        let e = items.into_iter().next().unwrap().unwrap_err();
        assert!(e.message().contains("a frame of 4294967280 bytes"), "{e}");
    }

    #[tokio::test]
    async fn exceptions_and_unknown_types_are_errors_and_end_the_stream() {
        let exception = frame(
            &[
                (":message-type", "exception"),
                (":exception-type", "throttlingException"),
            ],
            "{\"message\":\"Too many tokens\"}",
        );
        let items = decode(vec![exception, event("a", "{}")]).await;
        assert_eq!(items.len(), 1, "nothing after the error");
        let e = items.into_iter().next().unwrap().unwrap_err();
        assert_eq!(
            e.message(),
            "LLM provider error: throttlingException: Too many tokens"
        );
        let odd = frame(&[(":message-type", "surprise")], "{}");
        let e = decode(vec![odd]).await.remove(0).unwrap_err();
        assert!(e.message().contains("unexpected message type"), "{e}");
    }
}
