//! Sign-in routes.

mod account;
mod send;
mod verify;

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::repo::Me;
use crate::config::Config;
use crate::state::AppState;

/// The sign-in routes, each declared once with its OpenAPI description.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(send::send))
        .routes(routes!(verify::verify_page, verify::verify))
        .routes(routes!(verify::verify_code))
        .routes(routes!(account::me))
        .routes(routes!(account::logout))
        .routes(routes!(account::logout_all))
}

/// The signed-in user's email and tier, for the pages.
pub async fn me_summary(
    tx: &crate::db::UserTx,
) -> Result<Option<(String, crate::tier::Tier)>, crate::db::Error> {
    Ok(super::repo::me(tx).await?.map(|me| (me.email, me.tier)))
}

/// A sentence for people.
#[derive(Debug, Serialize, ToSchema)]
pub struct Notice {
    pub detail: String,
}

/// This week's conversation turns.
#[derive(Debug, Serialize, ToSchema)]
pub struct TurnUsage {
    /// Turns used in the current week.
    pub used: i32,
    /// Turns allowed per week; null when unlimited (Pro).
    pub limit: Option<u32>,
    /// When the current week ends and the count starts again; null before the first turn of a week.
    #[serde(serialize_with = "crate::time::rfc3339_opt")]
    pub resets_at: Option<DateTime<Utc>>,
}

/// The signed-in user's public fields (never Stripe ids).
#[derive(Debug, Serialize, ToSchema)]
pub struct UserResponse {
    pub id: Uuid,
    pub email: String,
    pub name: Option<String>,
    pub tier: crate::tier::Tier,
    pub turns: TurnUsage,
    #[serde(serialize_with = "crate::time::rfc3339")]
    pub created_at: DateTime<Utc>,
    /// Set while the account is being deleted; `POST /api/account/deletion/cancel` stops it.
    pub deletion: Option<Deletion>,
}

/// An account deletion under way.
#[derive(Debug, Serialize, ToSchema)]
pub struct Deletion {
    #[serde(serialize_with = "crate::time::rfc3339")]
    pub requested_at: DateTime<Utc>,
    /// When everything is erased, unless the deletion is cancelled before.
    #[serde(serialize_with = "crate::time::rfc3339")]
    pub purge_after: DateTime<Utc>,
}

impl UserResponse {
    pub fn new(me: Me, config: &Config, now: DateTime<Utc>) -> Self {
        let week_end = me.turn_week_start + Duration::days(7);
        let week_is_current = week_end > now;
        let limit = (!me.tier.is_pro()).then_some(config.limits.free_turns_per_week);
        UserResponse {
            id: me.id,
            email: me.email,
            name: me.name,
            tier: me.tier,
            turns: TurnUsage {
                used: if week_is_current { me.turn_count } else { 0 },
                limit,
                resets_at: week_is_current.then_some(week_end),
            },
            created_at: me.created_at,
            deletion: me.deletion_requested_at.zip(me.purge_after).map(
                |(requested_at, purge_after)| Deletion {
                    requested_at,
                    purge_after,
                },
            ),
        }
    }
}

/// What a JSON client gets on signing in. Browsers get the cookie and a redirect instead.
#[derive(Debug, Serialize, ToSchema)]
pub struct SignedIn {
    pub user: UserResponse,
    /// The session token, for `Authorization: Bearer` (also set as the session cookie,
    /// `__Host-session`, or `session` on plain-http localhost).
    pub token: String,
    #[serde(serialize_with = "crate::time::rfc3339")]
    pub expires_at: DateTime<Utc>,
}
