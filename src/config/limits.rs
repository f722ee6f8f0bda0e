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
    /// FREE_MAX_FILE_BYTES: largest workspace file on the free tier (default 5 MiB).
    pub free_max_file_bytes: u32,
    /// FREE_MAX_AIDE_BYTES: all of one aide's workspace files on the free tier (default 25 MiB).
    pub free_max_aide_bytes: u32,
    /// PRO_MAX_FILE_BYTES: largest workspace file on Pro (default 25 MiB).
    pub pro_max_file_bytes: u32,
    /// PRO_MAX_AIDE_BYTES: all of one aide's workspace files on Pro (default 250 MiB).
    pub pro_max_aide_bytes: u32,
    /// FREE_MAX_FILES_PER_AIDE: workspace files one aide may hold on the free tier (default 200).
    pub free_max_files_per_aide: u32,
    /// PRO_MAX_FILES_PER_AIDE: workspace files one aide may hold on Pro (default 2,000).
    pub pro_max_files_per_aide: u32,
    /// FREE_MAX_ACCOUNT_BYTES: everything a free account stores (workspace files and published
    /// versions, identical bytes counted once per aide and bucket; default 100 MiB).
    pub free_max_account_bytes: u64,
    /// PRO_MAX_ACCOUNT_BYTES: the same for Pro (default 10 GiB).
    pub pro_max_account_bytes: u64,
    /// FREE_MAX_CONVERSATION_BYTES: the text of one aide's conversation on the free tier
    /// (default 10 MiB).
    pub free_max_conversation_bytes: u32,
    /// PRO_MAX_CONVERSATION_BYTES: the same on Pro (default 100 MiB).
    pub pro_max_conversation_bytes: u32,
    /// FREE_REVISIONS_KEPT: revisions of one aide's files kept on the free tier (default 50).
    pub free_revisions_kept: u32,
    /// PRO_REVISIONS_KEPT: the same on Pro (default 500).
    pub pro_revisions_kept: u32,
    /// PUBLISHES_PER_USER_PER_HOUR: publishes and version restores per user per hour (default 30).
    pub publishes_per_user_per_hour: u32,
    /// UPLOADS_IN_FLIGHT_PER_USER: file uploads and publishes one user may have under way at once
    /// on one server (default 4).
    pub uploads_in_flight_per_user: u32,
    /// PUBLIC_MISSES_PER_IP_PER_MINUTE: public-page requests per client network per minute that
    /// are not answered from memory (default 120). IPv6 clients are counted per /64.
    pub public_misses_per_ip_per_minute: u32,
    /// CODE_FAILURES_PER_EMAIL_PER_DAY: wrong sign-in codes for one address per day, across all its
    /// links; past it only the emailed link signs in (default 10).
    pub code_failures_per_email_per_day: u32,
    /// MAGIC_LINKS_PER_DOMAIN_PER_HOUR: sign-in links sent to one email domain per hour
    /// (default 300).
    pub magic_links_per_domain_per_hour: u32,
    /// MAGIC_LINKS_PER_HOUR: sign-in links sent in all per hour, the last guard of the sender's
    /// reputation (default 2,000).
    pub magic_links_per_hour: u32,
    /// HTTP_MAX_CONNECTIONS: open client connections one server accepts at once (default 1,024);
    /// past it new connections wait in the listen queue.
    pub http_max_connections: u32,
    /// HTTP_HEADER_TIMEOUT_SECONDS: how long a client may take to send a request's headers, and
    /// how long an idle keep-alive connection stays open (default 10).
    pub http_header_timeout_seconds: u32,
    /// SHUTDOWN_READY_DRAIN_SECONDS: on SIGTERM, how long `/ready` answers 503 before the
    /// listener closes, so load balancers stop sending traffic first (default 2).
    pub shutdown_ready_drain_seconds: u32,
    /// ACCOUNT_DELETION_GRACE_DAYS: days between a confirmed account deletion and its purge,
    /// during which signing in can cancel it (default 14).
    pub account_deletion_grace_days: u32,
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
            free_max_file_bytes: 5 * MIB,
            free_max_aide_bytes: 25 * MIB,
            pro_max_file_bytes: 25 * MIB,
            pro_max_aide_bytes: 250 * MIB,
            free_max_files_per_aide: 200,
            pro_max_files_per_aide: 2_000,
            free_max_account_bytes: 100 * u64::from(MIB),
            pro_max_account_bytes: 10 * 1024 * u64::from(MIB),
            free_max_conversation_bytes: 10 * MIB,
            pro_max_conversation_bytes: 100 * MIB,
            free_revisions_kept: 50,
            pro_revisions_kept: 500,
            publishes_per_user_per_hour: 30,
            uploads_in_flight_per_user: 4,
            public_misses_per_ip_per_minute: 120,
            code_failures_per_email_per_day: 10,
            magic_links_per_domain_per_hour: 300,
            magic_links_per_hour: 2_000,
            http_max_connections: 1_024,
            http_header_timeout_seconds: 10,
            shutdown_ready_drain_seconds: 2,
            account_deletion_grace_days: 14,
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
    ("FREE_MAX_FILES_PER_AIDE", 1, 1_000_000, |l| {
        &mut l.free_max_files_per_aide
    }),
    ("PRO_MAX_FILES_PER_AIDE", 1, 1_000_000, |l| {
        &mut l.pro_max_files_per_aide
    }),
    ("FREE_MAX_CONVERSATION_BYTES", 1024, 4095 * MIB, |l| {
        &mut l.free_max_conversation_bytes
    }),
    ("PRO_MAX_CONVERSATION_BYTES", 1024, 4095 * MIB, |l| {
        &mut l.pro_max_conversation_bytes
    }),
    ("FREE_REVISIONS_KEPT", 1, 100_000, |l| {
        &mut l.free_revisions_kept
    }),
    ("PRO_REVISIONS_KEPT", 1, 100_000, |l| {
        &mut l.pro_revisions_kept
    }),
    ("PUBLISHES_PER_USER_PER_HOUR", 1, 100_000, |l| {
        &mut l.publishes_per_user_per_hour
    }),
    ("UPLOADS_IN_FLIGHT_PER_USER", 1, 1000, |l| {
        &mut l.uploads_in_flight_per_user
    }),
    ("PUBLIC_MISSES_PER_IP_PER_MINUTE", 1, 1_000_000, |l| {
        &mut l.public_misses_per_ip_per_minute
    }),
    ("CODE_FAILURES_PER_EMAIL_PER_DAY", 1, 1000, |l| {
        &mut l.code_failures_per_email_per_day
    }),
    ("MAGIC_LINKS_PER_DOMAIN_PER_HOUR", 1, 10_000_000, |l| {
        &mut l.magic_links_per_domain_per_hour
    }),
    ("MAGIC_LINKS_PER_HOUR", 1, 10_000_000, |l| {
        &mut l.magic_links_per_hour
    }),
    ("HTTP_MAX_CONNECTIONS", 16, 1_000_000, |l| {
        &mut l.http_max_connections
    }),
    ("HTTP_HEADER_TIMEOUT_SECONDS", 1, 600, |l| {
        &mut l.http_header_timeout_seconds
    }),
    ("SHUTDOWN_READY_DRAIN_SECONDS", 0, 300, |l| {
        &mut l.shutdown_ready_drain_seconds
    }),
    ("ACCOUNT_DELETION_GRACE_DAYS", 0, 90, |l| {
        &mut l.account_deletion_grace_days
    }),
];

/// The byte limits too large for a `u32`, with their ranges.
type WideField = (&'static str, u64, u64, fn(&mut Limits) -> &mut u64);

const WIDE_FIELDS: &[WideField] = &[
    ("FREE_MAX_ACCOUNT_BYTES", 1, 1 << 50, |l| {
        &mut l.free_max_account_bytes
    }),
    ("PRO_MAX_ACCOUNT_BYTES", 1, 1 << 50, |l| {
        &mut l.pro_max_account_bytes
    }),
];

const MIB: u32 = 1024 * 1024;

impl Limits {
    /// Reads every limit; each reading is also what `aide config check` shows for it.
    pub(super) fn from_source(src: &mut Source<'_>) -> Self {
        let mut limits = Limits::default();
        for (name, min, max, field) in FIELDS {
            let slot = field(&mut limits);
            *slot = src.number(name, *slot, *min, *max);
        }
        for (name, min, max, field) in WIDE_FIELDS {
            let slot = field(&mut limits);
            *slot = src.number(name, *slot, *min, *max);
        }
        limits
    }
}

/// The limits that differ between the free tier and Pro, for one of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TierLimits {
    pub pro: bool,
    pub max_file_bytes: u64,
    pub max_aide_bytes: u64,
    pub max_files_per_aide: u32,
    pub max_account_bytes: u64,
    pub max_conversation_bytes: u64,
    /// Revisions of one aide's files kept.
    pub revisions_kept: u32,
}

impl Limits {
    /// The limits of `tier`.
    pub fn tier(&self, tier: crate::tier::Tier) -> TierLimits {
        if tier.is_pro() {
            TierLimits {
                pro: true,
                max_file_bytes: u64::from(self.pro_max_file_bytes),
                max_aide_bytes: u64::from(self.pro_max_aide_bytes),
                max_files_per_aide: self.pro_max_files_per_aide,
                max_account_bytes: self.pro_max_account_bytes,
                max_conversation_bytes: u64::from(self.pro_max_conversation_bytes),
                revisions_kept: self.pro_revisions_kept,
            }
        } else {
            TierLimits {
                pro: false,
                max_file_bytes: u64::from(self.free_max_file_bytes),
                max_aide_bytes: u64::from(self.free_max_aide_bytes),
                max_files_per_aide: self.free_max_files_per_aide,
                max_account_bytes: self.free_max_account_bytes,
                max_conversation_bytes: u64::from(self.free_max_conversation_bytes),
                revisions_kept: self.free_revisions_kept,
            }
        }
    }
}
