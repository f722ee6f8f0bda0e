//! Rate limits and tier limits. Each has a default and an environment variable to override it.

use super::source::Source;

/// Rate and tier limits, each overridable by the variable named on its field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// MAGIC_LINK_TTL_MINUTES: how long a sign-in link stays valid (default 15).
    pub magic_link_ttl_minutes: u32,
    /// MAGIC_LINKS_PER_EMAIL_PER_HOUR: sign-in links sent to one address per hour (default 5).
    pub magic_links_per_email_per_hour: u32,
    /// MAGIC_LINK_REQUESTS_PER_IP_PER_HOUR: sign-in link requests from one client IP per hour
    /// (default 20).
    pub magic_link_requests_per_ip_per_hour: u32,
    /// VERIFICATIONS_PER_IP_PER_MINUTE: sign-in verification attempts from one client IP per minute
    /// (default 10).
    pub verifications_per_ip_per_minute: u32,
    /// SESSION_TTL_HOURS: how long a session lasts (default 24).
    pub session_ttl_hours: u32,
    /// FREE_TURNS_PER_WEEK: conversation turns a free user gets per week (default 50).
    pub free_turns_per_week: u32,
    /// FREE_MAX_AIDES: aides a free user may hold that are not archived (default 5).
    pub free_max_aides: u32,
    /// API_REQUESTS_PER_USER_PER_MINUTE: API requests per user per minute (default 100).
    pub api_requests_per_user_per_minute: u32,
    /// WS_CONNECTIONS_PER_USER: simultaneous websocket connections per user (default 5).
    pub ws_connections_per_user: u32,
    /// FREE_MAX_FILE_BYTES: largest workspace file on the free tier (default 5 MiB).
    pub free_max_file_bytes: u32,
    /// FREE_MAX_AIDE_BYTES: all of one aide's workspace files on the free tier (default 25 MiB).
    pub free_max_aide_bytes: u32,
    /// PRO_MAX_FILE_BYTES: largest workspace file on Pro (default 25 MiB).
    pub pro_max_file_bytes: u32,
    /// PRO_MAX_AIDE_BYTES: all of one aide's workspace files on Pro (default 250 MiB).
    pub pro_max_aide_bytes: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            magic_link_ttl_minutes: 15,
            magic_links_per_email_per_hour: 5,
            magic_link_requests_per_ip_per_hour: 20,
            verifications_per_ip_per_minute: 10,
            session_ttl_hours: 24,
            free_turns_per_week: 50,
            free_max_aides: 5,
            api_requests_per_user_per_minute: 100,
            ws_connections_per_user: 5,
            free_max_file_bytes: 5 * MIB,
            free_max_aide_bytes: 25 * MIB,
            pro_max_file_bytes: 25 * MIB,
            pro_max_aide_bytes: 250 * MIB,
        }
    }
}

/// Each limit's variable, its allowed range, and where it lives in [`Limits`].
type Field = (&'static str, u32, u32, fn(&mut Limits) -> &mut u32);

const FIELDS: &[Field] = &[
    ("MAGIC_LINK_TTL_MINUTES", 1, 24 * 60, |l| {
        &mut l.magic_link_ttl_minutes
    }),
    ("MAGIC_LINKS_PER_EMAIL_PER_HOUR", 1, 1000, |l| {
        &mut l.magic_links_per_email_per_hour
    }),
    ("MAGIC_LINK_REQUESTS_PER_IP_PER_HOUR", 1, 100_000, |l| {
        &mut l.magic_link_requests_per_ip_per_hour
    }),
    ("VERIFICATIONS_PER_IP_PER_MINUTE", 1, 100_000, |l| {
        &mut l.verifications_per_ip_per_minute
    }),
    ("SESSION_TTL_HOURS", 1, 24 * 90, |l| {
        &mut l.session_ttl_hours
    }),
    ("FREE_TURNS_PER_WEEK", 1, 1_000_000, |l| {
        &mut l.free_turns_per_week
    }),
    ("FREE_MAX_AIDES", 1, 100_000, |l| &mut l.free_max_aides),
    ("API_REQUESTS_PER_USER_PER_MINUTE", 1, 1_000_000, |l| {
        &mut l.api_requests_per_user_per_minute
    }),
    ("WS_CONNECTIONS_PER_USER", 1, 1000, |l| {
        &mut l.ws_connections_per_user
    }),
    ("FREE_MAX_FILE_BYTES", 1, 1024 * MIB, |l| {
        &mut l.free_max_file_bytes
    }),
    ("FREE_MAX_AIDE_BYTES", 1, 4095 * MIB, |l| {
        &mut l.free_max_aide_bytes
    }),
    ("PRO_MAX_FILE_BYTES", 1, 1024 * MIB, |l| {
        &mut l.pro_max_file_bytes
    }),
    ("PRO_MAX_AIDE_BYTES", 1, 4095 * MIB, |l| {
        &mut l.pro_max_aide_bytes
    }),
];

const MIB: u32 = 1024 * 1024;

impl Limits {
    pub(super) fn from_source(src: &mut Source<'_>) -> Self {
        let mut limits = Limits::default();
        for (name, min, max, field) in FIELDS {
            let slot = field(&mut limits);
            *slot = src.number(name, *slot, *min, *max);
        }
        limits
    }

    pub(super) fn summary(&self) -> Vec<(&'static str, String)> {
        let mut copy = self.clone();
        FIELDS
            .iter()
            .map(|(name, _, _, field)| (*name, field(&mut copy).to_string()))
            .collect()
    }
}
