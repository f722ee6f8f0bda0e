//! The one error type of database access.

use std::fmt;

/// A database operation failed: PostgreSQL refused a statement, the connection broke, or no
/// connection could be had in time.
#[derive(Debug)]
pub enum Error {
    /// From PostgreSQL or the connection to it.
    Postgres(tokio_postgres::Error),
    /// No connection became free, or none could be opened, within the pool's timeouts.
    Unavailable(String),
    /// A statement that is not in the registry (a bug: declare it with `statement!`).
    Unregistered(&'static str),
    /// A statement expected to return one row returned none.
    NoRow,
    /// A statement was sent to a scope after it committed.
    Finished,
}

impl Error {
    /// The SQLSTATE PostgreSQL answered with, if it answered with an error.
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Postgres(e) => e.code().map(|c| c.code()),
            _ => None,
        }
    }

    /// Whether this is the session check refusing a dead session (`assert_session_live` raises
    /// SQLSTATE 28000 at ERROR severity; a FATAL 28000 is a refused login, not a dead session).
    pub fn is_session_not_live(&self) -> bool {
        match self {
            Error::Postgres(e) => e.as_db_error().is_some_and(|db| {
                db.code().code() == super::SESSION_NOT_LIVE && db.severity() == "ERROR"
            }),
            _ => false,
        }
    }

    /// PostgreSQL's message for a refused statement (for errors our own functions raise, whose
    /// messages are written for people).
    pub fn message(&self) -> Option<&str> {
        match self {
            Error::Postgres(e) => e.as_db_error().map(|db| db.message()),
            _ => None,
        }
    }

    /// The constraint a statement violated, if any.
    pub fn constraint(&self) -> Option<&str> {
        match self {
            Error::Postgres(e) => e.as_db_error().and_then(|db| db.constraint()),
            _ => None,
        }
    }

    /// Whether PostgreSQL could not be reached or the connection broke (rather than a statement
    /// being refused): worth a 503 and a retry, not a 500.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Error::Unavailable(_) => true,
            Error::Postgres(e) => {
                e.is_closed()
                    || e.code().is_some_and(|c| {
                        // Class 08 (connection exception) and 57P (operator intervention: admin
                        // or crash shutdown, cannot connect now).
                        let code = c.code();
                        code.starts_with("08") || code.starts_with("57P")
                    })
                    || (e.as_db_error().is_none() && e.code().is_none() && is_io(e))
            }
            _ => false,
        }
    }
}

/// Whether the error came from the socket rather than from PostgreSQL.
fn is_io(e: &tokio_postgres::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = source {
        if s.is::<std::io::Error>() {
            return true;
        }
        source = s.source();
    }
    false
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Postgres(e) => match e.as_db_error() {
                // The database's own message, with its SQLSTATE (tokio-postgres's Display says
                // only "db error").
                Some(db) => write!(f, "{} (SQLSTATE {})", db.message(), db.code().code()),
                None => write!(f, "{e}"),
            },
            Error::Unavailable(why) => write!(f, "no database connection: {why}"),
            Error::Unregistered(text) => write!(f, "statement not registered: {text}"),
            Error::NoRow => f.write_str("the statement returned no row"),
            Error::Finished => f.write_str("the transaction has ended"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Postgres(e) => Some(e),
            _ => None,
        }
    }
}

impl From<tokio_postgres::Error> for Error {
    fn from(e: tokio_postgres::Error) -> Self {
        Error::Postgres(e)
    }
}
