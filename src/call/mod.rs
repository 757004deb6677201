//! The call surface: `Tracia` and its builder, the calls (`run_local`, `run_responses`,
//! `run_embedding`), their inputs and results, the call's span, streams and sessions.
//! It drives `providers` (wire formats), `telemetry` and `propagation`; none of them
//! imports it.

pub(crate) mod client;
pub(crate) mod embedding;
pub(crate) mod responses;
pub(crate) mod responses_stream;
pub(crate) mod run;
pub(crate) mod session;
pub(crate) mod span;
pub(crate) mod stream;
