//! Provider streams come from the network: SSE decoding and each provider's event
//! parsing (OpenAI Chat, Anthropic, Gemini, OpenAI Responses) must never panic, and the
//! body must decode to the same events however it is cut into chunks.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tracia::fuzzing::{Wire, decode_stream};

const WIRES: [Wire; 4] = [Wire::OpenAi, Wire::Anthropic, Wire::Gemini, Wire::Responses];

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

/// The size limit of one SSE event when the selector's high bit is set (so that the
/// limit is reached); the SDK's own 32 MiB otherwise.
const SMALL_LIMIT: usize = 200;
const SDK_LIMIT: usize = 32 * 1024 * 1024;

// Input: a byte picking the wire (and, by its high bit, a small event size limit), a
// byte `k` (mod 16), `k` chunk lengths, then the body.
fuzz_target!(|data: &[u8]| {
    let [selector, k, rest @ ..] = data else {
        return;
    };
    let k = usize::from(k % 16).min(rest.len());
    let (lens, body) = rest.split_at(k);
    let wire = WIRES[usize::from(*selector & 0x7f) % WIRES.len()];
    let limit = if selector & 0x80 != 0 {
        SMALL_LIMIT
    } else {
        SDK_LIMIT
    };

    let whole = decode_stream(wire, limit, vec![body.to_vec()]);
    let chunked = decode_stream(wire, limit, split(body, lens));
    assert_eq!(whole, chunked, "{wire:?}, chunk lengths {lens:?}");
});
