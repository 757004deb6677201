//! Bedrock's ConverseStream body comes from the network: AWS event-stream decoding and
//! the Bedrock event parsing must never panic, must decode the same however the body is
//! cut, and must not buffer without bound on a hostile length prefix.
#![no_main]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use libfuzzer_sys::fuzz_target;
use tracia::fuzzing::{Wire, decode_stream};

/// The body after the fuzz input, when asked for: this many chunks of `TAIL_CHUNK`
/// zeros, more than any frame the decoder may wait for.
const TAIL_CHUNKS: usize = 40;
const TAIL_CHUNK: usize = 1 << 20;
/// What the decoder may read of the tail: the largest frame it accepts (16 MiB), plus
/// the chunk that completes it.
const TAIL_READ_LIMIT: usize = 16 * (1 << 20) + TAIL_CHUNK;

/// Sets the prelude and message checksums of the frames `body` holds, so that what is
/// in the frames (headers, payloads) is fuzzed past the checksum checks.
fn fix_checksums(body: &mut [u8]) {
    let mut at = 0;
    while let Some(prelude) = body.get(at..at + 12) {
        let len = u32::from_be_bytes([prelude[0], prelude[1], prelude[2], prelude[3]]) as usize;
        if len < 16 || at + len > body.len() {
            return;
        }
        let crc = crc32fast::hash(&body[at..at + 8]);
        body[at + 8..at + 12].copy_from_slice(&crc.to_be_bytes());
        let crc = crc32fast::hash(&body[at..at + len - 4]);
        body[at + len - 4..at + len].copy_from_slice(&crc.to_be_bytes());
        at += len;
    }
}

/// Cuts `body` into chunks of the lengths in `lens`, used in turn (0 is an empty chunk).
fn split(body: &[u8], lens: &[u8]) -> Vec<Vec<u8>> {
    if lens.iter().all(|&l| l == 0) {
        let mut chunks = vec![Vec::new(); lens.len()];
        chunks.push(body.to_vec());
        return chunks;
    }
    let mut chunks = Vec::new();
    let mut rest = body;
    for &len in lens.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (chunk, tail) = rest.split_at(usize::from(len).min(rest.len()));
        chunks.push(chunk.to_vec());
        rest = tail;
    }
    chunks
}

// Input: a flags byte (bit 0: the body goes on with an endless-looking tail of zeros;
// bit 1: the frames' checksums are made right), a byte `k` (mod 16), `k` chunk lengths,
// then the body.
fuzz_target!(|data: &[u8]| {
    let [flags, k, rest @ ..] = data else {
        return;
    };
    let k = usize::from(k % 16).min(rest.len());
    let (lens, body) = rest.split_at(k);
    let mut body = body.to_vec();
    if flags & 2 != 0 {
        fix_checksums(&mut body);
    }
    let body = &body[..];

    if flags & 1 == 0 {
        let whole = decode_stream(Wire::Bedrock, 0, vec![body.to_vec()]);
        let chunked = decode_stream(Wire::Bedrock, 0, split(body, lens));
        assert_eq!(whole, chunked, "chunk lengths {lens:?}");
        return;
    }
    // A frame may declare up to 4 GiB: the decoder must give up before reading that.
    let read = Arc::new(AtomicUsize::new(0));
    let counter = read.clone();
    let tail = (0..TAIL_CHUNKS).map(move |_| {
        counter.fetch_add(TAIL_CHUNK, Ordering::Relaxed);
        vec![0_u8; TAIL_CHUNK]
    });
    let _ = decode_stream(Wire::Bedrock, 0, split(body, lens).into_iter().chain(tail));
    let read = read.load(Ordering::Relaxed);
    assert!(read <= TAIL_READ_LIMIT, "read {read} bytes of the tail");
});
