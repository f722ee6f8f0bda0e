//! SQL statements: constants, each tied to the scope that runs it, all known before the first one
//! runs.
//!
//! Every statement the server sends is declared with [`statement!`](crate::statement), which makes
//! a [`Sql`] constant and records it in one registry ([`all`]). Each pooled connection prepares
//! every registered statement, as the role that runs it, when it opens, so:
//!
//! * a statement with a typo, a wrong column or a wrong type stops the connection from opening
//!   (and the statement test, `tests/it/statements.rs`, fails before that ever happens);
//! * running a statement never waits for a `Parse`: a transaction's statements go out in the order
//!   they are first polled, which is what lets a scope open in the same round trip as its first
//!   statement (see [`super::scope`]).
//!
//! Values are always bound, in the binary protocol; the text is a constant.

use std::marker::PhantomData;

use tokio_postgres::Row;
use tokio_postgres::types::{FromSqlOwned, ToSql};

/// Statements run in user scope ([`super::UserTx`]), as `aide_user`.
#[derive(Debug, Clone, Copy)]
pub enum User {}

/// Statements run in system scope ([`super::SystemTx`]), as `aide_system`.
#[derive(Debug, Clone, Copy)]
pub enum System {}

/// Statements run in support scope ([`super::SupportTx`]), as `aide_support`: only the
/// staff-access functions, each of which checks a grant and audits what it reads.
#[derive(Debug, Clone, Copy)]
pub enum Support {}

/// Statements that open and end scopes, run as the login role before any role is switched to
/// (only [`super::scope`] runs them).
#[derive(Debug, Clone, Copy)]
pub enum Login {}

/// The scope a statement is declared for: the role it is prepared and checked as.
pub trait Scope {
    const ROLE: &'static str;
}

impl Scope for User {
    const ROLE: &'static str = super::USER_ROLE;
}

impl Scope for System {
    const ROLE: &'static str = super::SYSTEM_ROLE;
}

impl Scope for Support {
    const ROLE: &'static str = super::SUPPORT_ROLE;
}

impl Scope for Login {
    const ROLE: &'static str = super::LOGIN_ROLE;
}

/// A statement of scope `S`. Only [`statement!`](crate::statement) makes them, so each one is in
/// the registry.
#[derive(Debug)]
pub struct Sql<S> {
    text: &'static str,
    scope: PhantomData<S>,
}

impl<S> Sql<S> {
    /// Only through [`statement!`](crate::statement), which also registers it.
    pub(crate) const fn declared(text: &'static str) -> Self {
        Sql {
            text,
            scope: PhantomData,
        }
    }

    pub fn text(&self) -> &'static str {
        self.text
    }
}

/// One registered statement: its text and the role it runs as.
#[derive(Debug, Clone, Copy)]
pub struct Registered {
    pub text: &'static str,
    pub role: &'static str,
    /// Where it is declared (`module::NAME`), for error messages.
    pub name: &'static str,
}

inventory::collect!(Registered);

/// Every statement declared with [`statement!`](crate::statement), in no particular order.
pub fn all() -> impl Iterator<Item = &'static Registered> {
    inventory::iter::<Registered>.into_iter()
}

/// Declares statement constants and registers them:
///
/// ```ignore
/// statement! {
///     /// The caller's aide.
///     FIND: User = "select ... from aides where id = $1 and user_id = $2";
/// }
/// ```
///
/// The text must be a literal or `concat!` of literals and macros that expand to literals.
#[macro_export]
macro_rules! statement {
    ($($(#[$meta:meta])* $vis:vis $name:ident : $scope:ident = $text:expr;)+) => {
        $(
            $(#[$meta])*
            $vis const $name: $crate::db::Sql<$crate::db::$scope> =
                $crate::db::Sql::declared($text);
            $crate::db::inventory::submit! {
                $crate::db::Registered {
                    text: $text,
                    role: <$crate::db::$scope as $crate::db::Scope>::ROLE,
                    name: concat!(module_path!(), "::", stringify!($name)),
                }
            }
        )+
    };
}

/// The parameters of one statement, bound in order to `$1`, `$2`, ...
pub type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

/// A value read from a row: implemented by hand next to each row type, reading columns by name
/// (`row.try_get("title")?`).
pub trait FromRow: Sized {
    fn from_row(row: &Row) -> Result<Self, super::Error>;
}

/// A row of one column, read as that column's value.
pub struct Value<T>(pub T);

impl<T: FromSqlOwned> FromRow for Value<T> {
    fn from_row(row: &Row) -> Result<Self, super::Error> {
        Ok(Value(row.try_get(0)?))
    }
}

macro_rules! tuple_from_row {
    ($($t:ident $i:tt),+) => {
        /// A row read by position, for statements that select exactly these columns.
        impl<$($t: FromSqlOwned),+> FromRow for ($($t,)+) {
            fn from_row(row: &Row) -> Result<Self, super::Error> {
                Ok(($(row.try_get::<_, $t>($i)?,)+))
            }
        }
    };
}

tuple_from_row!(A 0, B 1);
tuple_from_row!(A 0, B 1, C 2);
tuple_from_row!(A 0, B 1, C 2, D 3);
tuple_from_row!(A 0, B 1, C 2, D 3, E 4);
tuple_from_row!(A 0, B 1, C 2, D 3, E 4, F 5);

/// Stores a Rust enum in a `text` column: `ToSql` writes `as_str()`, `FromSql` reads with
/// `parse(&str) -> Result<Self, &'static str>`.
#[macro_export]
macro_rules! text_column {
    ($t:ty) => {
        impl $crate::db::ToSql for $t {
            fn to_sql(
                &self,
                ty: &$crate::db::Type,
                out: &mut $crate::db::BytesMut,
            ) -> Result<$crate::db::IsNull, Box<dyn std::error::Error + Sync + Send>> {
                self.as_str().to_sql(ty, out)
            }

            fn accepts(ty: &$crate::db::Type) -> bool {
                <&str as $crate::db::ToSql>::accepts(ty)
            }

            $crate::db::to_sql_checked!();
        }

        impl<'a> $crate::db::FromSql<'a> for $t {
            fn from_sql(
                ty: &$crate::db::Type,
                raw: &'a [u8],
            ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
                let text = <&str as $crate::db::FromSql>::from_sql(ty, raw)?;
                <$t>::parse(text).map_err(|e| e.into())
            }

            fn accepts(ty: &$crate::db::Type) -> bool {
                <&str as $crate::db::FromSql>::accepts(ty)
            }
        }
    };
}
