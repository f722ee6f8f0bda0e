//! The plan a person is on: free, or Pro (see [`crate::config::TierLimits`] for what each allows).

use std::fmt;

use serde::Serialize;
use utoipa::ToSchema;

/// As stored in `users.tier`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    Free,
    Pro,
}

impl Tier {
    pub fn parse(raw: &str) -> Result<Self, &'static str> {
        match raw {
            "free" => Ok(Tier::Free),
            "pro" => Ok(Tier::Pro),
            _ => Err("a tier is free or pro"),
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Tier::Free => "free",
            Tier::Pro => "pro",
        }
    }

    pub fn is_pro(self) -> bool {
        self == Tier::Pro
    }
}

crate::text_column!(Tier);

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
