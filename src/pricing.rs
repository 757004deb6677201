//! Client-side cost of a call, from a vendored subset of LiteLLM's price table.
//!
//! `data/pricing.json` holds USD-per-token prices for every model id of the Tracia
//! registry, copied from LiteLLM's `model_prices_and_context_window.json` (MIT,
//! Copyright (c) 2023 Berri AI); `data/PRICING_SOURCE.md` names the release, the date
//! and the ids left unpriced. A model missing from the table has no cost: it is never
//! guessed from a similar id.

use std::collections::HashMap;
use std::sync::LazyLock;

use serde::Deserialize;

use crate::usage::Usage;

/// The vendored price table, embedded at compile time.
const PRICING_JSON: &str = include_str!("../data/pricing.json");

/// Prompt size (input tokens, cached ones included) above which tier prices apply.
const TIER_THRESHOLD_TOKENS: u64 = 200_000;

/// Bedrock cross-region prefixes that [`price`] may strip to find the bare model id.
const BEDROCK_REGION_PREFIXES: &[&str] = &[
    "us", "eu", "ap", "apac", "au", "jp", "ca", "sa", "me", "af", "global", "us-gov",
];

/// Vendor parts of Bedrock model ids (`anthropic.claude-…`); only these lose a region prefix.
const BEDROCK_VENDORS: &[&str] = &[
    "anthropic",
    "amazon",
    "mistral",
    "cohere",
    "meta",
    "ai21",
    "deepseek",
    "writer",
];

/// Prices of one model, in USD per token, as LiteLLM lists them.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
pub(crate) struct ModelPrice {
    /// Uncached input token (`input_cost_per_token`).
    pub input: f64,
    /// Output token (`output_cost_per_token`).
    pub output: f64,
    /// Input token read from the prompt cache (`cache_read_input_token_cost`).
    #[serde(default)]
    pub cache_read: Option<f64>,
    /// Input token written to the prompt cache, 5-minute cache (`cache_creation_input_token_cost`).
    #[serde(default)]
    pub cache_write: Option<f64>,
    /// Reasoning output token, when priced apart (`output_cost_per_reasoning_token`).
    #[serde(default)]
    pub reasoning: Option<f64>,
    /// Uncached input token when the prompt exceeds 200k tokens.
    #[serde(default)]
    pub input_above_200k: Option<f64>,
    /// Output token when the prompt exceeds 200k tokens.
    #[serde(default)]
    pub output_above_200k: Option<f64>,
    /// Cache-read token when the prompt exceeds 200k tokens.
    #[serde(default)]
    pub cache_read_above_200k: Option<f64>,
    /// Cache-write token when the prompt exceeds 200k tokens.
    #[serde(default)]
    pub cache_write_above_200k: Option<f64>,
}

impl ModelPrice {
    /// Cost in USD of a call with `usage` at these prices.
    ///
    /// `usage` is normalized: `input_tokens` includes cache reads and writes, and
    /// `output_tokens` includes reasoning tokens. So:
    /// - uncached input is billed at `input`;
    /// - cache reads are billed at `cache_read` and cache writes at `cache_write`, each
    ///   falling back to `input` when the model has no cache price;
    /// - output is billed at `output`, except the reasoning subset, which is billed at
    ///   `reasoning` when that price exists.
    ///
    /// When the prompt is longer than 200k tokens, every rate that has an
    /// `*_above_200k` price uses it. In that case a separate reasoning price is dropped
    /// when an output tier exists, because LiteLLM has no reasoning tier.
    pub(crate) fn cost(&self, usage: &Usage) -> f64 {
        let long = usage.input_tokens > TIER_THRESHOLD_TOKENS;
        let tiered =
            |base: Option<f64>, above: Option<f64>| if long { above.or(base) } else { base };

        let input_rate = tiered(Some(self.input), self.input_above_200k).unwrap_or(self.input);
        let cache_read_rate =
            tiered(self.cache_read, self.cache_read_above_200k).unwrap_or(input_rate);
        let cache_write_rate =
            tiered(self.cache_write, self.cache_write_above_200k).unwrap_or(input_rate);
        let output_rate = tiered(Some(self.output), self.output_above_200k).unwrap_or(self.output);
        let reasoning_rate = match self.reasoning {
            Some(_) if long && self.output_above_200k.is_some() => output_rate,
            Some(rate) => rate,
            None => output_rate,
        };

        let cache_read = usage.cache_read_input_tokens.unwrap_or(0);
        let cache_write = usage.cache_creation_input_tokens.unwrap_or(0);
        let uncached = usage.uncached_input_tokens();
        let reasoning = usage
            .reasoning_output_tokens
            .unwrap_or(0)
            .min(usage.output_tokens);
        let plain_output = usage.output_tokens - reasoning;

        uncached as f64 * input_rate
            + cache_read as f64 * cache_read_rate
            + cache_write as f64 * cache_write_rate
            + plain_output as f64 * output_rate
            + reasoning as f64 * reasoning_rate
    }
}

/// The parts of `data/pricing.json` the crate reads; the other keys are notes.
#[derive(Deserialize)]
struct PricingFile {
    /// Where the prices come from: LiteLLM release, file and license.
    source: String,
    /// Day the prices were taken, `YYYY-MM-DD`.
    retrieved: String,
    /// Registry model id to price.
    models: HashMap<String, ModelPrice>,
    /// Region-prefixed Bedrock ids (`eu.anthropic.…`) that LiteLLM prices apart.
    #[serde(default)]
    bedrock_region_variants: HashMap<String, ModelPrice>,
}

/// The parsed table.
struct PriceTable {
    /// `source` and `retrieved` of the json, as one line.
    source: String,
    /// Registry model id to price.
    models: HashMap<String, ModelPrice>,
    /// Region-prefixed Bedrock ids priced apart.
    region_variants: HashMap<String, ModelPrice>,
}

/// The embedded table, parsed on first use.
static TABLE: LazyLock<PriceTable> = LazyLock::new(|| {
    let file: PricingFile = serde_json::from_str(PRICING_JSON)
        .expect("embedded data/pricing.json is valid (unit-tested)");
    PriceTable {
        source: format!("{} Retrieved {}.", file.source, file.retrieved),
        models: file.models,
        region_variants: file.bedrock_region_variants,
    }
});

/// Where the prices behind [`crate::RunResult::cost`] come from (LiteLLM release, file,
/// license) and the day they were taken.
///
/// ```
/// assert!(tracia::pricing_source().contains("LiteLLM"));
/// ```
pub fn pricing_source() -> &'static str {
    &TABLE.source
}

/// Price of `model`, matched exactly; `None` when the table has no price for it.
///
/// A region-prefixed Bedrock id (`eu.anthropic.claude-…`) gets its own regional price
/// when LiteLLM lists one, or else the price of the bare id (`anthropic.claude-…`). Only
/// known region prefixes in front of known Bedrock vendors are stripped, so `eu.gpt-4o`
/// has no price.
pub(crate) fn price(model: &str) -> Option<&'static ModelPrice> {
    let table = &*TABLE;
    if let Some(p) = table
        .models
        .get(model)
        .or_else(|| table.region_variants.get(model))
    {
        return Some(p);
    }
    let (region, bare) = model.split_once('.')?;
    let vendor = bare.split_once('.').map(|(vendor, _)| vendor)?;
    if BEDROCK_REGION_PREFIXES.contains(&region) && BEDROCK_VENDORS.contains(&vendor) {
        table.models.get(bare)
    } else {
        None
    }
}

/// Cost in USD of one call of `model` with `usage`, from the same vendored price table
/// the results' `cost` comes from; `None` when `model` has no price (never a guess).
///
/// ```
/// let usage = tracia::Usage { input_tokens: 1000, output_tokens: 100, total_tokens: 1100,
///     ..Default::default() };
/// assert!(tracia::cost_usd("gpt-4o-mini", &usage).unwrap() > 0.0);
/// assert_eq!(tracia::cost_usd("my-own-model", &usage), None);
/// ```
pub fn cost_usd(model: &str, usage: &Usage) -> Option<f64> {
    price(model).map(|p| p.cost(usage))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Tracia model registry (`tracia-api.md` §14): 94 chat models, then 12 embedding models.
    #[rustfmt::skip]
    const REGISTRY: &[&str] = &[
        // OpenAI (58)
        "chatgpt-4o-latest",
        "gpt-3.5-turbo", "gpt-3.5-turbo-0125", "gpt-3.5-turbo-1106", "gpt-3.5-turbo-16k",
        "gpt-4", "gpt-4-0125-preview", "gpt-4-1106-preview", "gpt-4-turbo", "gpt-4-turbo-2024-04-09",
        "gpt-4-turbo-preview",
        "gpt-4.1", "gpt-4.1-2025-04-14", "gpt-4.1-mini", "gpt-4.1-mini-2025-04-14", "gpt-4.1-nano",
        "gpt-4.1-nano-2025-04-14",
        "gpt-4o", "gpt-4o-2024-05-13", "gpt-4o-2024-08-06", "gpt-4o-2024-11-20",
        "gpt-4o-mini", "gpt-4o-mini-2024-07-18", "gpt-4o-mini-search-preview",
        "gpt-4o-mini-search-preview-2025-03-11", "gpt-4o-search-preview",
        "gpt-4o-search-preview-2025-03-11",
        "gpt-5", "gpt-5-2025-08-07", "gpt-5-chat-latest", "gpt-5-codex", "gpt-5-mini",
        "gpt-5-mini-2025-08-07", "gpt-5-nano", "gpt-5-nano-2025-08-07", "gpt-5-pro",
        "gpt-5-pro-2025-10-06",
        "gpt-5.1", "gpt-5.1-2025-11-13", "gpt-5.1-chat-latest", "gpt-5.1-codex", "gpt-5.1-codex-max",
        "gpt-5.1-codex-mini",
        "gpt-5.2", "gpt-5.2-2025-12-11", "gpt-5.2-chat-latest", "gpt-5.2-pro", "gpt-5.2-pro-2025-12-11",
        "o1", "o1-2024-12-17", "o1-pro", "o1-pro-2025-03-19",
        "o3", "o3-2025-04-16", "o3-mini", "o3-mini-2025-01-31",
        "o4-mini", "o4-mini-2025-04-16",
        // Anthropic (15)
        "claude-3-haiku-20240307", "claude-3-opus-20240229", "claude-3-7-sonnet-20250219",
        "claude-4-opus-20250514", "claude-4-sonnet-20250514",
        "claude-sonnet-4-20250514", "claude-opus-4-20250514",
        "claude-opus-4-1", "claude-opus-4-1-20250805",
        "claude-sonnet-4-5", "claude-sonnet-4-5-20250929",
        "claude-haiku-4-5", "claude-haiku-4-5-20251001",
        "claude-opus-4-5", "claude-opus-4-5-20251101",
        // Google (12)
        "gemini-2.0-flash", "gemini-2.0-flash-001", "gemini-2.0-flash-exp", "gemini-2.0-flash-lite",
        "gemini-2.0-flash-lite-001",
        "gemini-2.5-flash", "gemini-2.5-flash-lite", "gemini-2.5-flash-lite-preview-09-2025",
        "gemini-2.5-flash-preview-09-2025", "gemini-2.5-pro",
        "gemini-3-pro-preview", "gemini-3-flash-preview",
        // Amazon Bedrock (9)
        "anthropic.claude-haiku-4-5-20251001-v1:0",
        "anthropic.claude-sonnet-4-20250514-v1:0",
        "anthropic.claude-sonnet-4-5-20250929-v1:0",
        "anthropic.claude-opus-4-5-20251101-v1:0",
        "anthropic.claude-opus-4-6-v1",
        "amazon.nova-micro-v1:0", "amazon.nova-lite-v1:0", "amazon.nova-pro-v1:0",
        "mistral.pixtral-large-2502-v1:0",
        // Embedding models (12)
        "text-embedding-3-small", "text-embedding-3-large", "text-embedding-ada-002",
        "text-embedding-004",
        "amazon.titan-embed-text-v2:0", "cohere.embed-english-v3",
        "voyage-3", "voyage-3-large", "voyage-3-lite", "voyage-code-3", "voyage-finance-2",
        "voyage-law-2",
    ];

    /// Asserts two USD amounts agree to well under a millionth of a cent.
    fn assert_usd(actual: f64, expected: f64) {
        assert!(
            (actual - expected).abs() < 1e-12,
            "cost {actual} != expected {expected}"
        );
    }

    /// Usage with the given counts; `total_tokens` is input + output.
    fn usage(
        input: u64,
        cache_read: Option<u64>,
        cache_write: Option<u64>,
        output: u64,
        reasoning: Option<u64>,
    ) -> Usage {
        Usage {
            input_tokens: input,
            output_tokens: output,
            total_tokens: input + output,
            cache_read_input_tokens: cache_read,
            cache_creation_input_tokens: cache_write,
            reasoning_output_tokens: reasoning,
        }
    }

    /// The ids the json's `unpriced` note names.
    fn unpriced_ids() -> Vec<String> {
        let json: serde_json::Value = serde_json::from_str(PRICING_JSON).expect("valid json");
        json["unpriced"]
            .as_object()
            .expect("`unpriced` is an object")
            .keys()
            .cloned()
            .collect()
    }

    #[test]
    fn registry_has_94_chat_and_12_embedding_models() {
        assert_eq!(REGISTRY.len(), 106);
        let unique: std::collections::HashSet<_> = REGISTRY.iter().collect();
        assert_eq!(unique.len(), REGISTRY.len(), "duplicate id in REGISTRY");
    }

    #[test]
    fn every_registry_model_is_priced_or_named_unpriced() {
        let unpriced = unpriced_ids();
        for id in REGISTRY {
            let priced = price(id).is_some();
            let named = unpriced.iter().any(|u| u == id);
            assert!(
                priced != named,
                "{id}: priced={priced}, named unpriced={named}"
            );
        }
        // The table holds exactly the registry ids, and the unpriced note names only registry ids.
        assert_eq!(TABLE.models.len() + unpriced.len(), REGISTRY.len());
        for id in TABLE.models.keys().chain(unpriced.iter()) {
            assert!(REGISTRY.contains(&id.as_str()), "{id} is not a registry id");
        }
    }

    #[test]
    fn every_price_is_finite_and_non_negative() {
        for (id, p) in TABLE.models.iter().chain(TABLE.region_variants.iter()) {
            let all = [
                Some(p.input),
                Some(p.output),
                p.cache_read,
                p.cache_write,
                p.reasoning,
                p.input_above_200k,
                p.output_above_200k,
                p.cache_read_above_200k,
                p.cache_write_above_200k,
            ];
            for v in all.into_iter().flatten() {
                assert!(v.is_finite() && v >= 0.0, "{id}: bad price {v}");
            }
        }
    }

    #[test]
    fn source_names_litellm_release_license_and_date() {
        let s = pricing_source();
        assert!(s.contains("litellm 1.109.1"), "{s}");
        assert!(s.contains("Copyright (c) 2023 Berri AI"), "{s}");
        assert!(s.contains("Retrieved 20"), "{s}");
    }

    #[test]
    fn openai_cached_call() {
        // gpt-4o-mini: input 1.5e-7, cache_read 7.5e-8, output 6e-7 USD/token.
        // input 1149 of which 1024 cache reads -> 125 uncached.
        //   125 * 1.5e-7  = 0.00001875
        //   1024 * 7.5e-8 = 0.0000768
        //   353 * 6e-7    = 0.0002118
        //   total         = 0.00030735
        let u = usage(1149, Some(1024), None, 353, None);
        assert_usd(cost_usd("gpt-4o-mini", &u).expect("priced"), 0.000_307_35);
    }

    #[test]
    fn anthropic_cache_read_and_write() {
        // claude-sonnet-4-5: input 3e-6, cache_read 3e-7, cache_write 3.75e-6, output 1.5e-5.
        // input 10_000 = 1_000 uncached + 6_000 cache reads + 3_000 cache writes.
        //   1_000 * 3e-6    = 0.003
        //   6_000 * 3e-7    = 0.0018
        //   3_000 * 3.75e-6 = 0.01125
        //   500 * 1.5e-5    = 0.0075
        //   total           = 0.02355
        let u = usage(10_000, Some(6_000), Some(3_000), 500, None);
        assert_usd(cost_usd("claude-sonnet-4-5", &u).expect("priced"), 0.023_55);
    }

    #[test]
    fn reasoning_model_bills_reasoning_inside_output() {
        // o3-mini: input 1.1e-6, output 4.4e-6; LiteLLM has no separate reasoning price,
        // so the 1_200 reasoning tokens are billed as the output they are part of.
        //   2_000 * 1.1e-6 = 0.0022
        //   1_500 * 4.4e-6 = 0.0066
        //   total          = 0.0088
        let p = price("o3-mini").expect("priced");
        assert_eq!(p.reasoning, None);
        let u = usage(2_000, None, None, 1_500, Some(1_200));
        assert_usd(cost_usd("o3-mini", &u).expect("priced"), 0.0088);
    }

    #[test]
    fn separate_reasoning_price_applies_to_the_reasoning_subset() {
        let p = ModelPrice {
            input: 1e-6,
            output: 2e-6,
            cache_read: None,
            cache_write: None,
            reasoning: Some(5e-6),
            input_above_200k: None,
            output_above_200k: None,
            cache_read_above_200k: None,
            cache_write_above_200k: None,
        };
        // 1_000 * 1e-6 + 600 * 2e-6 + 400 * 5e-6 = 0.001 + 0.0012 + 0.002 = 0.0042
        assert_usd(p.cost(&usage(1_000, None, None, 1_000, Some(400))), 0.0042);
        // A reasoning count above the output count is capped at it: 1_000 * 5e-6 = 0.005.
        assert_usd(p.cost(&usage(0, None, None, 1_000, Some(5_000))), 0.005);
    }

    #[test]
    fn cache_tokens_without_cache_price_fall_back_to_input() {
        // gpt-4o-2024-05-13 has no cache price: input 5e-6, output 1.5e-5.
        // (200 + 300 cached + 100 written) * 5e-6 = 0.003; 10 * 1.5e-5 = 0.00015; total 0.00315
        let u = usage(600, Some(300), Some(100), 10, None);
        assert_usd(cost_usd("gpt-4o-2024-05-13", &u).expect("priced"), 0.003_15);
    }

    #[test]
    fn long_prompt_uses_tier_prices() {
        // gemini-2.5-pro above 200k: input 2.5e-6, cache_read 2.5e-7, output 1.5e-5.
        //   200_000 * 2.5e-6 = 0.5
        //   50_000 * 2.5e-7  = 0.0125
        //   1_000 * 1.5e-5   = 0.015
        //   total            = 0.5275
        let u = usage(250_000, Some(50_000), None, 1_000, None);
        assert_usd(cost_usd("gemini-2.5-pro", &u).expect("priced"), 0.5275);
        // Exactly 200k is not above it: base input 1.25e-6, cache_read 1.25e-7, output 1e-5.
        //   150_000 * 1.25e-6 + 50_000 * 1.25e-7 + 1_000 * 1e-5 = 0.1875 + 0.00625 + 0.01 = 0.20375
        let u = usage(200_000, Some(50_000), None, 1_000, None);
        assert_usd(cost_usd("gemini-2.5-pro", &u).expect("priced"), 0.203_75);
        // Bedrock Claude Sonnet 4 above 200k, with a cache-write tier: input 6e-6,
        // cache_read 6e-7, cache_write 7.5e-6, output 2.25e-5.
        //   150_000 uncached * 6e-6   = 0.9
        //   100_000 read * 6e-7       = 0.06
        //   50_000 written * 7.5e-6   = 0.375
        //   2_000 output * 2.25e-5    = 0.045
        //   total                     = 1.38
        let u = usage(300_000, Some(100_000), Some(50_000), 2_000, None);
        assert_usd(
            cost_usd("anthropic.claude-sonnet-4-20250514-v1:0", &u).expect("priced"),
            1.38,
        );
    }

    #[test]
    fn bedrock_region_prefix() {
        let bare = "anthropic.claude-sonnet-4-5-20250929-v1:0";
        assert_eq!(price(bare).map(|p| p.input), Some(3e-6));
        // LiteLLM lists the EU cross-region profile 10% higher.
        assert_eq!(price(&format!("eu.{bare}")).map(|p| p.input), Some(3.3e-6));
        // No regional entry: the bare id's price.
        assert_eq!(price(&format!("ap.{bare}")), price(bare));
        assert_eq!(
            price("eu.mistral.pixtral-large-2502-v1:0"),
            price("mistral.pixtral-large-2502-v1:0")
        );
        // Not a region prefix, or a prefix on a non-Bedrock id: no price.
        assert_eq!(price(&format!("xx.{bare}")), None);
        assert_eq!(price("eu.gpt-4o"), None);
    }

    #[test]
    fn unknown_model_has_no_cost() {
        let u = usage(100, None, None, 100, None);
        for id in [
            "",
            "gpt-4o-unknown",
            "GPT-4O",
            "gpt-4o ",
            "openai/gpt-4o",
            "text-embedding-004",
            "4.1",
        ] {
            assert_eq!(cost_usd(id, &u), None, "{id:?}");
        }
    }
}
