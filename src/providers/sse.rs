//! Server-sent events: a response body decoded as the WHATWG event-stream format.
//!
//! Linear in the body and lazy: each event is decoded from the chunk in hand when the
//! consumer asks for it, so a body that arrives in one piece hands on its first event
//! as soon as that event's lines are read. (`eventsource-stream` copies the rest of its
//! buffer after every line, which is quadratic in a chunk's size: 9 M instructions for
//! the 47 KB `openai/chat-stream` body at once.)

use std::str::Utf8Error;
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt, stream};

use crate::error::{Error, ErrorCode, Result};
use crate::transport::transport_error;

/// One server-sent event: its name (`message` when unnamed) and data.
#[derive(Debug)]
pub(crate) struct SseEvent {
    pub event: String,
    pub data: String,
}

/// Decodes a response body as server-sent events. A body that breaks off mid-way or
/// is not UTF-8 yields an error item and then ends.
pub(crate) fn sse_events(
    body: impl Stream<Item = reqwest::Result<Bytes>> + Send + 'static,
    timeout: Duration,
) -> impl Stream<Item = Result<SseEvent>> + Send + 'static {
    let state = Reader {
        body: Box::pin(body),
        decoder: Decoder::default(),
        chunk: Bytes::new(),
        at: 0,
    };
    stream::unfold(Some(state), move |state| async move {
        let mut s = state?;
        loop {
            match s.decoder.next_event(&s.chunk, &mut s.at) {
                Ok(Some(event)) => return Some((Ok(event), Some(s))),
                Ok(None) => {}
                Err(e) => return Some((Err(not_utf8(e)), None)),
            }
            match s.body.next().await {
                Some(Ok(chunk)) => {
                    s.chunk = chunk;
                    s.at = 0;
                }
                Some(Err(e)) => return Some((Err(transport_error(e, timeout)), None)),
                None => return s.decoder.finish().err().map(|e| (Err(not_utf8(e)), None)),
            }
        }
    })
    .fuse()
}

fn not_utf8(e: Utf8Error) -> Error {
    Error::new(
        ErrorCode::ProviderError,
        format!("LLM provider error: stream is not valid UTF-8: {e}"),
    )
}

struct Reader<S> {
    body: std::pin::Pin<Box<S>>,
    decoder: Decoder,
    /// The chunk being decoded, from `at` on.
    chunk: Bytes,
    at: usize,
}

/// The event being assembled and the line state between chunks.
///
/// An event is checked to be UTF-8 as a whole, when it is complete: an event the size
/// cap cuts off is then never half-read, whatever chunks its lines came in.
#[derive(Default)]
struct Decoder {
    event: Vec<u8>,
    data: Vec<u8>,
    /// The start of a line whose end has not arrived yet.
    partial: Vec<u8>,
    /// The last line ended with a CR: an LF next is the rest of a CRLF.
    after_cr: bool,
    /// The first line has been read (only the stream's start may hold a byte-order mark).
    started: bool,
}

impl Decoder {
    /// Reads lines of `input` from `*at` until an event is complete; `None` once the
    /// input is used up first.
    fn next_event(
        &mut self,
        input: &[u8],
        at: &mut usize,
    ) -> std::result::Result<Option<SseEvent>, Utf8Error> {
        while *at < input.len() {
            let rest = &input[*at..];
            if std::mem::take(&mut self.after_cr) && rest[0] == b'\n' {
                *at += 1;
                continue;
            }
            let Some(end) = memchr::memchr2(b'\n', b'\r', rest) else {
                self.partial.extend_from_slice(rest);
                *at = input.len();
                break;
            };
            self.after_cr = rest[end] == b'\r';
            *at += end + 1;
            let event = if self.partial.is_empty() {
                self.line(&rest[..end])?
            } else {
                let mut line = std::mem::take(&mut self.partial);
                line.extend_from_slice(&rest[..end]);
                let event = self.line(&line);
                line.clear();
                self.partial = line;
                event?
            };
            if event.is_some() {
                return Ok(event);
            }
        }
        Ok(None)
    }

    /// At the end of the body: an unfinished event and a last line without its end
    /// are dropped (as the format says), but must still be text.
    fn finish(&self) -> std::result::Result<(), Utf8Error> {
        for bytes in [&self.event, &self.data, &self.partial] {
            std::str::from_utf8(bytes)?;
        }
        Ok(())
    }

    fn line(&mut self, line: &[u8]) -> std::result::Result<Option<SseEvent>, Utf8Error> {
        let line = if std::mem::replace(&mut self.started, true) {
            line
        } else {
            line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line)
        };
        if line.is_empty() {
            return self.dispatch();
        }
        let (field, value) = match memchr::memchr(b':', line) {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"event" => {
                self.event.clear();
                self.event.extend_from_slice(value);
            }
            b"data" => {
                self.data.extend_from_slice(value);
                self.data.push(b'\n');
            }
            // Comments (an empty field name), `id`, `retry` and unknown fields.
            _ => {}
        }
        Ok(None)
    }

    /// An empty line ends an event; one without data is no event.
    fn dispatch(&mut self) -> std::result::Result<Option<SseEvent>, Utf8Error> {
        let event = std::mem::take(&mut self.event);
        if self.data.is_empty() {
            return Ok(None);
        }
        let mut data = std::mem::take(&mut self.data);
        data.pop(); // The newline after the last data line.
        let text = |bytes: Vec<u8>| String::from_utf8(bytes).map_err(|e| e.utf8_error());
        Ok(Some(SseEvent {
            event: if event.is_empty() {
                "message".to_owned()
            } else {
                text(event)?
            },
            data: text(data)?,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn decode(chunks: &[&'static [u8]]) -> Vec<(String, String)> {
        let chunks: Vec<&'static [u8]> = chunks.to_vec();
        let body = stream::iter(chunks.into_iter().map(|c| Ok(Bytes::from_static(c))));
        sse_events(body, Duration::from_secs(1))
            .map(|e| e.map(|e| (e.event, e.data)).unwrap())
            .collect()
            .await
    }

    fn events(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(e, d)| ((*e).to_owned(), (*d).to_owned()))
            .collect()
    }

    #[tokio::test]
    async fn fields_lines_and_events_as_the_format_says() {
        let body: &[u8] = b": a comment\n\
            data: one\n\n\
            event: named\ndata:two\ndata:  three\nid: 7\nretry: 10\nunknown: x\n\n\
            data\n\n\
            event: without data\n\n\
            data: cr\r\rdata: crlf\r\n\r\n\
            data: unfinished";
        let expected = events(&[
            ("message", "one"),
            ("named", "two\n three"),
            ("message", ""),
            ("message", "cr"),
            ("message", "crlf"),
        ]);
        assert_eq!(decode(&[body]).await, expected);
        // However the body is cut into chunks, the events are the same.
        for size in [1, 2, 3, 7] {
            let chunks: Vec<&'static [u8]> = body.chunks(size).collect();
            assert_eq!(decode(&chunks).await, expected, "chunks of {size}");
        }
    }

    #[tokio::test]
    async fn a_crlf_split_across_chunks_ends_one_line() {
        assert_eq!(
            decode(&[b"data: a\r", b"\n\r", b"\ndata: b\n\n"]).await,
            events(&[("message", "a"), ("message", "b")])
        );
    }

    #[tokio::test]
    async fn a_leading_byte_order_mark_is_skipped_however_it_is_split() {
        let expected = events(&[("message", "{}")]);
        assert_eq!(decode(&[b"\xEF\xBB\xBFdata: {}\n\n"]).await, expected);
        assert_eq!(
            decode(&[b"\xEF", b"", b"\xBB", b"\xBFdata: {}\n\n"]).await,
            expected
        );
        assert_eq!(decode(&[b"data: {}\n\n"]).await, expected);
        // Only one mark is the stream's: a second one starts the first field's name.
        assert!(
            decode(&[b"\xEF\xBB\xBF\xEF\xBB\xBFdata: {}\n\n"])
                .await
                .is_empty()
        );
    }

    #[tokio::test]
    async fn invalid_utf8_is_an_error_and_the_end() {
        for body in [&b"data: \xFF\n\ndata: later\n\n"[..], b"\xEF"] {
            let items: Vec<_> = sse_events(
                stream::iter([Ok(Bytes::from_static(body))]),
                Duration::from_secs(1),
            )
            .collect()
            .await;
            assert_eq!(items.len(), 1, "{body:?}");
            let error = items[0].as_ref().unwrap_err();
            assert!(error.to_string().contains("not valid UTF-8"), "{error}");
        }
        // A body is not polled past its end (an `unfold` body panics if it is): found
        // by the `sse` fuzz target.
        let lone = stream::unfold(false, |done| async move {
            (!done).then(|| (Ok(Bytes::from_static(b"\xEF")), true))
        });
        let items: Vec<_> = sse_events(lone, Duration::from_secs(1)).collect().await;
        assert!(matches!(items[..], [Err(_)]), "{items:?}");
    }

    #[tokio::test]
    async fn the_first_event_is_handed_on_before_the_rest_is_decoded() {
        let mut decoder = Decoder::default();
        let input = b"data: 1\n\ndata: 2\n\n";
        let mut at = 0;
        let first = decoder.next_event(input, &mut at).unwrap().unwrap();
        assert_eq!((first.data.as_str(), at), ("1", 9));
    }
}
