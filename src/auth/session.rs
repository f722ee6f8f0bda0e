//! Sessions: a JWT in the session cookie (`__Host-session`, or `session` on plain-http localhost)
//! or an `Authorization: Bearer` header, backed by a row in `sessions` that every authenticated
//! request checks, so logout takes effect at once.

use std::net::IpAddr;

use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use url::Url;
use uuid::Uuid;

use super::{jwt, repo};
use crate::db::{self, Db, ReadTx, SystemTx, UserId, UserTx};
use crate::error::AppError;
use crate::limits::Rate;
use crate::state::AppState;

/// The session cookie's name wherever it is `Secure`. The `__Host-` prefix makes browsers refuse
/// it unless it is Secure, has `Path=/` and no `Domain`, so a sibling subdomain cannot set or
/// shadow it.
const HOST_COOKIE: &str = "__Host-session";
/// Its name on plain-http localhost, where it cannot be Secure and browsers refuse `__Host-`.
const LOCAL_COOKIE: &str = "session";

/// The key session tokens are signed with.
#[derive(Clone)]
pub struct SessionKey(SecretString);

impl SessionKey {
    pub fn new(secret: SecretString) -> Self {
        SessionKey(secret)
    }

    fn bytes(&self) -> &[u8] {
        self.0.expose_secret().as_bytes()
    }

    /// A key for another purpose, derived from this one (HMAC-SHA256 of `label`), so one secret
    /// serves several signatures and none can stand in for another.
    pub fn derive(&self, label: &str) -> [u8; 32] {
        use hmac::{Hmac, Mac};
        let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(self.bytes())
            .expect("HMAC takes a key of any length");
        mac.update(label.as_bytes());
        mac.finalize().into_bytes().into()
    }
}

impl std::fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKey(..)")
    }
}

/// A session just created.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub id: Uuid,
    pub token: String,
    pub expires_at: DateTime<Utc>,
    /// The session's whole lifetime, for the cookie's Max-Age.
    pub lifetime_secs: i64,
}

/// Creates the session row and signs its token, in the caller's transaction.
pub async fn start(
    tx: &SystemTx,
    key: &SessionKey,
    user: UserId,
    ttl_hours: u32,
    ip: IpAddr,
    user_agent: Option<&str>,
) -> Result<NewSession, db::Error> {
    let (id, created_at, expires_at) =
        repo::create_session(tx, user, ttl_hours, ip, user_agent).await?;
    let claims = jwt::Claims {
        sub: user.0,
        sid: id,
        iat: created_at.timestamp(),
        exp: expires_at.timestamp(),
    };
    Ok(NewSession {
        id,
        token: jwt::sign(key.bytes(), &claims),
        expires_at,
        lifetime_secs: (expires_at - created_at).num_seconds(),
    })
}

/// The signed-in caller: their id and session. Extracting it answers 401 unless the request
/// carries a valid token whose session row is live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CurrentUser {
    pub user_id: UserId,
    pub session_id: Uuid,
}

impl FromRequestParts<AppState> for CurrentUser {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        let claims = verified_claims(parts, state)?;
        let user = UserId(claims.sub);
        if !repo::session_is_live(&state.db, claims.sid, user).await? {
            tracing::info!(user_id = %user, "session revoked or expired");
            return Err(AppError::unauthorized());
        }
        Ok(CurrentUser {
            user_id: user,
            session_id: claims.sid,
        })
    }
}

/// A caller whose token is valid and whose session is checked in the same round trip as the
/// first statement of the request's transaction: [`SessionUser::begin`] is the only way to its
/// data, so the check cannot be skipped, and it costs no round trip of its own. A dead session
/// fails that first statement with SQLSTATE 28000, which `?` turns into 401.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionUser {
    user: UserId,
    session: Uuid,
}

impl SessionUser {
    /// The caller's id.
    pub fn user_id(&self) -> UserId {
        self.user
    }

    /// The caller's session.
    pub fn session_id(&self) -> Uuid {
        self.session
    }

    /// The caller's user-scoped transaction, which checks their session is live before its first
    /// statement. Does no I/O beyond taking a pooled connection.
    pub async fn begin(&self, db: &Db) -> Result<UserTx, AppError> {
        Ok(db.user_with_session(self.user, self.session).await?)
    }

    /// Like [`SessionUser::begin`], for a handler that only reads (see [`ReadTx`]).
    pub async fn begin_read(&self, db: &Db) -> Result<ReadTx, AppError> {
        Ok(db.user_read_with_session(self.user, self.session).await?)
    }
}

impl FromRequestParts<AppState> for SessionUser {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        let claims = verified_claims(parts, state)?;
        Ok(SessionUser {
            user: UserId(claims.sub),
            session: claims.sid,
        })
    }
}

/// A caller of the `/api` routes: a [`SessionUser`] within the per-user API rate limit
/// (API_REQUESTS_PER_USER_PER_MINUTE), which holds across server processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiUser(pub SessionUser);

impl ApiUser {
    /// The caller's id.
    pub fn user_id(&self) -> UserId {
        self.0.user
    }

    /// See [`SessionUser::begin`].
    pub async fn begin(&self, db: &Db) -> Result<UserTx, AppError> {
        self.0.begin(db).await
    }

    /// See [`SessionUser::begin_read`].
    pub async fn begin_read(&self, db: &Db) -> Result<ReadTx, AppError> {
        self.0.begin_read(db).await
    }
}

impl FromRequestParts<AppState> for ApiUser {
    type Rejection = AppError;

    /// Charges the user's API budget only for a live session: the limiter checks the session in
    /// the statement that takes the tokens, so a revoked or expired token gets 401 and costs its
    /// owner nothing.
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        let session = SessionUser::from_request_parts(parts, state).await?;
        let rate = Rate::per_minute(state.config.limits.api_requests_per_user_per_minute);
        let verdict = state
            .api_limiter
            .check(&state.db, session.user, session.session, rate)
            .await?;
        if let Err(wait) = verdict {
            return Err(AppError::rate_limited(
                "Too many requests. Please slow down and try again shortly.",
                wait,
            ));
        }
        Ok(ApiUser(session))
    }
}

/// The claims of a correctly signed, unexpired token from the Authorization header or the session
/// cookie. Records the user on the request's span.
fn verified_claims(parts: &Parts, state: &AppState) -> Result<jwt::Claims, AppError> {
    let token = bearer_token(&parts.headers)
        .or_else(|| session_cookie(&parts.headers, &state.config.app_url))
        .ok_or_else(AppError::unauthorized)?;
    let claims =
        jwt::verify(state.session_key.bytes(), token, Utc::now().timestamp()).map_err(|e| {
            tracing::info!(reason = %e, "session token refused");
            AppError::unauthorized()
        })?;
    tracing::Span::current().record("user_id", tracing::field::display(claims.sub));
    crate::telemetry::set_user(claims.sub);
    Ok(claims)
}

/// `Option<CurrentUser>`: None when signed out (or the session is dead), for pages that show
/// either state.
impl OptionalFromRequestParts<AppState> for CurrentUser {
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Option<Self>, AppError> {
        match <CurrentUser as FromRequestParts<AppState>>::from_request_parts(parts, state).await {
            Ok(user) => Ok(Some(user)),
            Err(e) if e.status() == axum::http::StatusCode::UNAUTHORIZED => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// The token of a well-formed `Authorization: Bearer <token>` header. Any other scheme (Basic,
/// Negotiate...) is not ours, and a request carrying one is still treated as cookie-authenticated.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// The value of cookie `name`, from any Cookie header.
pub fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

/// The session cookie's name for an app served at `app_url`: `__Host-session` whenever the cookie
/// is Secure, `session` on plain-http localhost.
pub fn cookie_name(app_url: &Url) -> &'static str {
    if insecure_local(app_url) {
        LOCAL_COOKIE
    } else {
        HOST_COOKIE
    }
}

/// The session token from the cookie of the configured name (see [`cookie_name`]).
pub fn session_cookie<'a>(headers: &'a HeaderMap, app_url: &Url) -> Option<&'a str> {
    cookie_value(headers, cookie_name(app_url))
}

/// Whether a request carries session credentials of ours: the session cookie or a Bearer token.
pub fn carries_credentials(headers: &HeaderMap, app_url: &Url) -> bool {
    bearer_token(headers).is_some() || session_cookie(headers, app_url).is_some()
}

/// Whether cookies may go without `Secure`: only for plain-http localhost.
fn insecure_local(app_url: &Url) -> bool {
    app_url.scheme() == "http"
        && matches!(
            app_url.host_str(),
            Some("localhost" | "127.0.0.1" | "[::1]")
        )
}

/// `Set-Cookie` for a new session.
pub fn set_cookie(app_url: &Url, session: &NewSession) -> HeaderValue {
    cookie_header(app_url, &session.token, session.lifetime_secs.max(0))
}

/// `Set-Cookie` that removes the session cookie.
pub fn clear_cookie(app_url: &Url) -> HeaderValue {
    cookie_header(app_url, "", 0)
}

fn cookie_header(app_url: &Url, value: &str, max_age: i64) -> HeaderValue {
    let secure = if insecure_local(app_url) {
        ""
    } else {
        "; Secure"
    };
    let name = cookie_name(app_url);
    let cookie =
        format!("{name}={value}; HttpOnly; SameSite=Lax; Path=/; Max-Age={max_age}{secure}");
    // Tokens are base64url and dots: always a valid header value.
    HeaderValue::from_str(&cookie)
        .unwrap_or_else(|_| HeaderValue::from_static("session=; Max-Age=0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cookies_and_bearer_tokens() {
        let mut headers = HeaderMap::new();
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; session=tok.en; b=2"),
        );
        assert_eq!(cookie_value(&headers, "session"), Some("tok.en"));
        assert_eq!(cookie_value(&headers, "sess"), None);
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer abc"),
        );
        assert_eq!(bearer_token(&headers), Some("abc"));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer_token(&headers), None);
    }

    #[test]
    fn secure_and_host_prefixed_unless_plain_http_localhost() {
        for (url, secure) in [
            ("http://localhost:8000", false),
            ("http://127.0.0.1:8000", false),
            ("https://localhost", true),
            ("http://app.example.com", true),
            ("https://app.example.com", true),
        ] {
            let url = Url::parse(url).expect("url");
            let value = clear_cookie(&url);
            let text = value.to_str().expect("ascii");
            assert_eq!(text.ends_with("; Secure"), secure, "{url}: {text}");
            let name = if secure { "__Host-session" } else { "session" };
            assert_eq!(cookie_name(&url), name);
            assert!(
                text.starts_with(&format!(
                    "{name}=; HttpOnly; SameSite=Lax; Path=/; Max-Age=0"
                )),
                "{text}"
            );
        }
    }

    #[test]
    fn only_the_configured_cookie_is_read() {
        let https = Url::parse("https://app.example.com").expect("url");
        let mut headers = HeaderMap::new();
        headers.append(header::COOKIE, HeaderValue::from_static("session=old"));
        assert_eq!(session_cookie(&headers, &https), None);
        assert!(!carries_credentials(&headers, &https));
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("__Host-session=new"),
        );
        assert_eq!(session_cookie(&headers, &https), Some("new"));
        let local = Url::parse("http://127.0.0.1:8000").expect("url");
        assert_eq!(session_cookie(&headers, &local), Some("old"));
        let mut bearer = HeaderMap::new();
        bearer.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer t"));
        assert!(carries_credentials(&bearer, &https));
        bearer.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic dTpw"),
        );
        assert!(!carries_credentials(&bearer, &https));
        bearer.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer "));
        assert!(!carries_credentials(&bearer, &https));
    }
}
