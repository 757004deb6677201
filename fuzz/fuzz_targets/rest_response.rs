//! Tracia REST responses come from the network: reading one, as an error or as any
//! response type, must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

// Input: a big-endian HTTP status in the first 2 bytes, then the body.
fuzz_target!(|data: &[u8]| {
    let Some((status, body)) = data.split_first_chunk::<2>() else {
        return;
    };
    let status = u16::from_be_bytes(*status);
    let error = tracia::fuzzing::rest_error(status, body);
    let _ = error.to_string();
    if http::StatusCode::from_u16(status).is_ok() {
        assert_eq!(error.status(), Some(status));
    }

    let _ = serde_json::from_slice::<tracia::SpanPage>(body);
    let _ = serde_json::from_slice::<tracia::Span>(body);
    let _ = serde_json::from_slice::<tracia::Prompt>(body);
    let _ = serde_json::from_slice::<tracia::PromptListItem>(body);
    let _ = serde_json::from_slice::<tracia::RunPromptResult>(body);
    let _ = serde_json::from_slice::<tracia::Evaluation>(body);
});
