//! Aide types: validated inputs, the stored row, and what clients see.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::db;

/// An aide's title: 1 to 200 characters once trimmed, no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Title(String);

impl Title {
    pub fn parse(raw: &str) -> Result<Self, &'static str> {
        let title = raw.trim();
        let chars = title.chars().count();
        if chars == 0 {
            return Err("must not be empty");
        }
        if chars > 200 {
            return Err("must be at most 200 characters");
        }
        if title.chars().any(char::is_control) {
            return Err("must not contain control characters");
        }
        Ok(Title(title.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Words that cannot be slugs: they name the app's own paths, or could be mistaken for them.
pub const RESERVED_SLUGS: &[&str] = &[
    "about",
    "account",
    "admin",
    "api",
    "app",
    "assets",
    "auth",
    "billing",
    "blog",
    "dashboard",
    "docs",
    "edit",
    "help",
    "home",
    "login",
    "logout",
    "new",
    "pricing",
    "privacy",
    "pro",
    "public",
    "ready",
    "health",
    "settings",
    "signin",
    "signup",
    "static",
    "status",
    "support",
    "terms",
    "www",
];

/// A public page's name: 3 to 100 characters of `a-z`, `0-9` and single inner hyphens, and not a
/// reserved word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slug(String);

impl Slug {
    pub fn parse(raw: &str) -> Result<Self, &'static str> {
        let slug = raw.trim();
        if !(3..=100).contains(&slug.len()) {
            return Err("must be 3 to 100 characters long");
        }
        if !slug
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err("may contain only lower-case letters a-z, digits and hyphens");
        }
        if slug.starts_with('-') || slug.ends_with('-') || slug.contains("--") {
            return Err("must not start or end with a hyphen or contain two in a row");
        }
        if slug == "s" || RESERVED_SLUGS.contains(&slug) {
            return Err("is reserved; choose another");
        }
        Ok(Slug(slug.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Where an aide is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Draft,
    Published,
    Archived,
}

impl Status {
    pub fn parse(raw: &str) -> Result<Self, &'static str> {
        match raw {
            "draft" => Ok(Status::Draft),
            "published" => Ok(Status::Published),
            "archived" => Ok(Status::Archived),
            _ => Err("must be draft, published or archived"),
        }
    }

    /// As stored in `aides.status`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Status::Draft => "draft",
            Status::Published => "published",
            Status::Archived => "archived",
        }
    }
}

crate::text_column!(Status);

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The columns an [`AideRow`] reads, by name: every query that returns aide rows selects exactly
/// these (`concat!` needs a macro rather than a constant). The slug is the one the aide holds or,
/// before its first publish, the one its owner asked for.
macro_rules! aide_columns {
    () => {
        "id, user_id, title, coalesce(slug, requested_slug) as slug, status, created_at, updated_at"
    };
}
pub(crate) use aide_columns;

/// An aide as stored.
#[derive(Debug, Clone)]
pub struct AideRow {
    pub id: Uuid,
    pub user_id: Uuid,
    pub title: String,
    pub slug: Option<String>,
    pub status: Status,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl db::FromRow for AideRow {
    fn from_row(row: &db::Row) -> Result<Self, db::Error> {
        Ok(AideRow {
            id: row.try_get("id")?,
            user_id: row.try_get("user_id")?,
            title: row.try_get("title")?,
            slug: row.try_get("slug")?,
            status: row.try_get("status")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
        })
    }
}

/// An aide as clients see it: no storage prefix, no owner id.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Aide {
    pub id: Uuid,
    pub title: String,
    /// The public page's name, once chosen (Pro) or assigned on first publish. Chosen before the
    /// first publish, it is reserved only when the page is first published.
    pub slug: Option<String>,
    pub status: Status,
    #[serde(serialize_with = "crate::time::rfc3339")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::time::rfc3339")]
    pub updated_at: DateTime<Utc>,
}

impl From<AideRow> for Aide {
    fn from(row: AideRow) -> Self {
        Aide {
            id: row.id,
            title: row.title,
            slug: row.slug,
            status: row.status,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

/// `POST /api/aides`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"title": "Groceries"}))]
pub struct CreateAide {
    /// 1 to 200 characters; "Untitled" when left out.
    pub title: Option<String>,
}

/// `PATCH /api/aides/{id}`: only the fields given change.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"title": "Weekly groceries"}))]
pub struct UpdateAide {
    pub title: Option<String>,
    /// Pro only: 3 to 100 characters of a-z, 0-9 and inner hyphens.
    pub slug: Option<String>,
}

/// A page of aides.
#[derive(Debug, Serialize, ToSchema)]
pub struct AidePage {
    pub items: Vec<Aide>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles() {
        assert_eq!(
            Title::parse("  Groceries ").map(|t| t.0),
            Ok("Groceries".into())
        );
        assert!(Title::parse("   ").is_err());
        assert!(Title::parse(&"é".repeat(200)).is_ok());
        assert!(Title::parse(&"é".repeat(201)).is_err());
        assert!(Title::parse("a\u{0}b").is_err());
    }

    #[test]
    fn slugs() {
        for good in ["abc", "poker-night-2025", "a1b", &"a".repeat(100)] {
            assert!(Slug::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "ab",
            "-abc",
            "abc-",
            "a--b",
            "Abc",
            "ab_c",
            "ab c",
            "api",
            "auth",
            "admin",
            "static",
            "assets",
            "héllo",
            &"a".repeat(101),
        ] {
            assert!(Slug::parse(bad).is_err(), "{bad}");
        }
    }
}
