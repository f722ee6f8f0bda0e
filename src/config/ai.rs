//! The model provider for AI turns. Without AI_PROVIDER turns are off (they answer
//! `503 AI_NOT_CONFIGURED`) and everything else works; staging and production refuse to start
//! without one.

use std::fmt;
use std::time::Duration;

use secrecy::SecretString;
use url::Url;

use super::source::Source;

/// Which wire protocol the provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AiProvider {
    /// Anthropic's Messages API.
    Anthropic,
    /// OpenAI's Chat Completions, and the servers that speak it (Ollama, llama.cpp, vLLM).
    OpenAi,
}

impl AiProvider {
    pub fn as_str(self) -> &'static str {
        match self {
            AiProvider::Anthropic => "anthropic",
            AiProvider::OpenAi => "openai",
        }
    }
}

impl fmt::Display for AiProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Prices in micro-dollars per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Prices {
    pub input: u64,
    pub output: u64,
    pub cache_read: u64,
    pub cache_write: u64,
}

impl fmt::Display for Prices {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = |micros: u64| micros as f64 / 1e6;
        write!(
            f,
            "{},{},{},{}",
            d(self.input),
            d(self.output),
            d(self.cache_read),
            d(self.cache_write)
        )
    }
}

impl Prices {
    /// `input,output,cache_read,cache_write` in US dollars per million tokens.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let parts: Vec<&str> = raw.split(',').map(str::trim).collect();
        let micros = |s: &str| -> Option<u64> {
            let dollars: f64 = s.parse().ok()?;
            (dollars.is_finite() && (0.0..=1e6).contains(&dollars))
                .then(|| (dollars * 1e6).round() as u64)
        };
        match parts.as_slice() {
            [a, b, c, d] => match (micros(a), micros(b), micros(c), micros(d)) {
                (Some(input), Some(output), Some(cache_read), Some(cache_write)) => Ok(Prices {
                    input,
                    output,
                    cache_read,
                    cache_write,
                }),
                _ => Err(PRICE_FORMAT.to_string()),
            },
            _ => Err(PRICE_FORMAT.to_string()),
        }
    }

    /// Known models' list prices (US dollars per million tokens), by name prefix; None for a
    /// model not listed (a local one is free).
    pub fn known(model: &str) -> Option<Self> {
        const TABLE: &[(&str, [f64; 4])] = &[
            ("claude-opus-4", [15.0, 75.0, 1.5, 18.75]),
            ("claude-sonnet-4", [3.0, 15.0, 0.3, 3.75]),
            ("claude-haiku-4", [1.0, 5.0, 0.1, 1.25]),
            ("claude-3-5-haiku", [0.8, 4.0, 0.08, 1.0]),
            ("gpt-4.1-mini", [0.4, 1.6, 0.1, 0.0]),
            ("gpt-4.1-nano", [0.1, 0.4, 0.025, 0.0]),
            ("gpt-4.1", [2.0, 8.0, 0.5, 0.0]),
            ("gpt-4o-mini", [0.15, 0.6, 0.075, 0.0]),
            ("gpt-4o", [2.5, 10.0, 1.25, 0.0]),
        ];
        TABLE
            .iter()
            .find(|(prefix, _)| model.starts_with(prefix))
            .map(|(_, p)| Prices {
                input: (p[0] * 1e6) as u64,
                output: (p[1] * 1e6) as u64,
                cache_read: (p[2] * 1e6) as u64,
                cache_write: (p[3] * 1e6) as u64,
            })
    }

    /// What `usage` costs, in micro-dollars.
    pub fn cost_micros(&self, input: u64, output: u64, cache_read: u64, cache_write: u64) -> u64 {
        let part = |tokens: u64, price: u64| u128::from(tokens) * u128::from(price);
        let total = part(input, self.input)
            + part(output, self.output)
            + part(cache_read, self.cache_read)
            + part(cache_write, self.cache_write);
        u64::try_from(total / 1_000_000).unwrap_or(u64::MAX)
    }
}

const PRICE_FORMAT: &str = "must be four prices in US dollars per million tokens: input,output,cache_read,cache_write (for example 3,15,0.3,3.75)";

/// How turns reach the model.
#[derive(Debug, Clone)]
pub struct AiConfig {
    /// AI_PROVIDER: `anthropic` or `openai` (any OpenAI-compatible server).
    pub provider: AiProvider,
    /// AI_BASE_URL: the API's base (default https://api.anthropic.com, or
    /// https://api.openai.com/v1 for `openai`; a local server such as http://127.0.0.1:11434/v1).
    pub base_url: Url,
    /// AI_API_KEY (or ANTHROPIC_API_KEY): required for Anthropic; optional for a local
    /// OpenAI-compatible server.
    pub api_key: Option<SecretString>,
    /// AI_MODEL: the model's name (default claude-sonnet-4-5, or gpt-4.1 for `openai`).
    pub model: String,
    /// AI_MAX_OUTPUT_TOKENS: tokens one response may have (default 8,192).
    pub max_output_tokens: u32,
    /// AI_MAX_ROUNDS: requests to the model in one turn at most (default 4): more rounds happen
    /// only when a tool call failed or the model viewed a file.
    pub max_rounds: u32,
    /// AI_TURN_TIMEOUT_SECONDS: a turn's whole time at most (default 120).
    pub turn_timeout: Duration,
    /// AI_STALL_TIMEOUT_SECONDS: how long the provider may send nothing before the turn fails
    /// (default 30; its keep-alive pings count).
    pub stall_timeout: Duration,
    /// AI_PRICES: `input,output,cache_read,cache_write` in US dollars per million tokens (default:
    /// the model's list price when known, else 0).
    pub prices: Prices,
}

impl AiConfig {
    /// Reads every AI_ variable (all are shown by `aide config check`); None without a provider.
    pub(super) fn from_source(src: &mut Source<'_>) -> Option<AiConfig> {
        let provider = src.parse_opt(
            "AI_PROVIDER",
            "AI turns off: they answer 503 AI_NOT_CONFIGURED",
            |v| match v {
                "anthropic" => Ok(AiProvider::Anthropic),
                "openai" => Ok(AiProvider::OpenAi),
                _ => Err("must be anthropic or openai (any OpenAI-compatible server)".to_string()),
            },
        );
        let (default_url, default_model) = match provider {
            Some(AiProvider::OpenAi) => ("https://api.openai.com/v1", "gpt-4.1"),
            _ => ("https://api.anthropic.com", "claude-sonnet-4-5"),
        };
        let base_url = src.http_url("AI_BASE_URL", default_url);
        let api_key = src
            .secret("AI_API_KEY", Some("ANTHROPIC_API_KEY, if set"))
            .or(src.secret("ANTHROPIC_API_KEY", Some("AI_API_KEY, if set")));
        let model = src.text("AI_MODEL", default_model).to_string();
        let max_output_tokens = src.number("AI_MAX_OUTPUT_TOKENS", 8192, 256, 128_000);
        let max_rounds = src.number("AI_MAX_ROUNDS", 4, 1, 16);
        let turn_timeout = src.number("AI_TURN_TIMEOUT_SECONDS", 120_u64, 5, 3600);
        let stall_timeout = src.number("AI_STALL_TIMEOUT_SECONDS", 30_u64, 1, 600);
        let prices = match src.parse_opt(
            "AI_PRICES",
            "the model's list price when known, else 0",
            Prices::parse,
        ) {
            Some(prices) => prices,
            None => Prices::known(&model).unwrap_or_default(),
        };
        let provider = provider?;
        if provider == AiProvider::Anthropic && api_key.is_none() {
            src.problem(
                "AI_API_KEY",
                "is required with AI_PROVIDER=anthropic (ANTHROPIC_API_KEY is read too)",
            );
        }
        Some(AiConfig {
            provider,
            base_url: base_url?,
            api_key,
            model,
            max_output_tokens,
            max_rounds,
            turn_timeout: Duration::from_secs(turn_timeout),
            stall_timeout: Duration::from_secs(stall_timeout),
            prices,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_parse_and_cost_in_micro_dollars() {
        let p = Prices::parse("3, 15, 0.3, 3.75").expect("parses");
        assert_eq!(p.input, 3_000_000);
        assert_eq!(p.cache_write, 3_750_000);
        // 1,000 input and 500 output tokens at $3 and $15 per million: $0.003 + $0.0075.
        assert_eq!(p.cost_micros(1000, 500, 0, 0), 10_500);
        assert_eq!(p.cost_micros(0, 0, 10_000, 1000), 3000 + 3750);
        for bad in ["1,2,3", "a,b,c,d", "-1,0,0,0", "inf,0,0,0"] {
            assert!(Prices::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            Prices::known("claude-sonnet-4-5-20250929").map(|p| p.output),
            Some(15_000_000)
        );
        assert_eq!(
            Prices::known("gpt-4.1-mini").map(|p| p.input),
            Some(400_000)
        );
        assert!(Prices::known("llama3.2").is_none());
    }
}
