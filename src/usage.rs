//! Token usage of one call, normalized to the OpenTelemetry GenAI rules.

use serde::{Deserialize, Serialize};

/// Token counts of one call.
///
/// Normalized the OpenTelemetry GenAI way, whatever the provider reported:
/// `input_tokens` *includes* cached tokens (read and written), and `output_tokens`
/// *includes* reasoning tokens. The optional counts are subsets, present only when
/// the provider reported them.
///
/// ```
/// let usage = tracia::Usage { input_tokens: 1149, output_tokens: 353, total_tokens: 1502,
///     cache_read_input_tokens: Some(1024), ..Default::default() };
/// assert_eq!(usage.uncached_input_tokens(), 125);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Every input token, cached ones included.
    pub input_tokens: u64,
    /// Every output token, reasoning ones included.
    pub output_tokens: u64,
    /// `input_tokens + output_tokens`, or the provider's own total.
    pub total_tokens: u64,
    /// Input tokens read from the provider's prompt cache (a subset of input).
    pub cache_read_input_tokens: Option<u64>,
    /// Input tokens written to the provider's prompt cache (a subset of input).
    pub cache_creation_input_tokens: Option<u64>,
    /// Output tokens spent on reasoning (a subset of output).
    pub reasoning_output_tokens: Option<u64>,
}

impl Usage {
    /// Input tokens billed at the base rate: input minus cache reads and writes.
    pub fn uncached_input_tokens(&self) -> u64 {
        self.input_tokens
            .saturating_sub(self.cache_read_input_tokens.unwrap_or(0))
            .saturating_sub(self.cache_creation_input_tokens.unwrap_or(0))
    }

    /// Usage from a provider that counts cached input apart from its input count
    /// (Anthropic, Bedrock): the OpenTelemetry input is the sum of the three.
    pub(crate) fn with_cache_apart(
        uncached_input: u64,
        cache_read: Option<u64>,
        cache_write: Option<u64>,
        output: u64,
    ) -> Self {
        let input = uncached_input
            .saturating_add(cache_read.unwrap_or(0))
            .saturating_add(cache_write.unwrap_or(0));
        Usage {
            input_tokens: input,
            output_tokens: output,
            total_tokens: input.saturating_add(output),
            cache_read_input_tokens: cache_read,
            cache_creation_input_tokens: cache_write,
            reasoning_output_tokens: None,
        }
    }
}
