//! Pooled connections, each with every registered statement prepared.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use deadpool::managed::{self, Metrics, RecycleError, RecycleResult};
use tokio_postgres::{Client, Config, NoTls, Statement};

use super::Error;
use super::statement;

/// How long a pooled connection may sit idle before it is checked (one round trip) when next
/// taken out: long enough idle to have been dropped by a server or a proxy in between.
const CHECK_IDLE_AFTER: Duration = Duration::from_secs(10);
/// Connections are replaced after this long, so that after a failover they move to the new
/// server, and after this long idle, so an idle server process does not hold connections.
pub(super) const MAX_LIFETIME: Duration = Duration::from_secs(30 * 60);
pub(super) const MAX_IDLE: Duration = Duration::from_secs(10 * 60);

/// A connection and its prepared statements, keyed by their text.
pub struct Conn {
    pub(super) client: Client,
    statements: HashMap<&'static str, Statement>,
}

impl Conn {
    /// The prepared form of a registered statement.
    pub(super) fn statement(&self, text: &'static str) -> Result<&Statement, Error> {
        self.statements.get(text).ok_or(Error::Unregistered(text))
    }
}

/// Opens connections for the pool.
pub struct Manager {
    pub(super) config: Config,
}

impl managed::Manager for Manager {
    type Type = Conn;
    type Error = Error;

    async fn create(&self) -> Result<Conn, Error> {
        let client = connect(&self.config).await?;
        let statements = prepare_all(&client).await?;
        Ok(Conn { client, statements })
    }

    async fn recycle(&self, conn: &mut Conn, metrics: &Metrics) -> RecycleResult<Error> {
        if conn.client.is_closed() {
            return Err(RecycleError::message("the connection is closed"));
        }
        if metrics.age() > MAX_LIFETIME || metrics.last_used() > MAX_IDLE {
            return Err(RecycleError::message("the connection is old"));
        }
        if metrics.last_used() > CHECK_IDLE_AFTER {
            conn.client
                .simple_query("")
                .await
                .map_err(|e| RecycleError::Backend(e.into()))?;
        }
        Ok(())
    }
}

/// Opens one connection, its I/O driven by a task of its own until it closes.
pub async fn connect(config: &Config) -> Result<Client, Error> {
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "a database connection ended");
        }
    });
    Ok(client)
}

/// Prepares every registered statement on `client`, each as the role that will run it, in one
/// round trip. Prepared statements belong to the connection, not the transaction, so they outlive
/// the transaction that switches roles to prepare them.
async fn prepare_all(client: &Client) -> Result<HashMap<&'static str, Statement>, Error> {
    let mut by_role: HashMap<&'static str, Vec<&'static statement::Registered>> = HashMap::new();
    for registered in statement::all() {
        by_role.entry(registered.role).or_default().push(registered);
    }
    let mut steps: Vec<Step<'_, Option<Prepared>, Error>> = vec![Box::pin(async {
        client
            .batch_execute("begin")
            .await
            .map(|()| None)
            .map_err(Error::from)
    })];
    for (role, statements) in by_role {
        // A role name is a constant of this crate, never input.
        let enter = format!("select set_config('role', '{role}', true)");
        steps.push(Box::pin(async move {
            client
                .batch_execute(&enter)
                .await
                .map(|()| None)
                .map_err(Error::from)
        }));
        for registered in statements {
            steps.push(Box::pin(async move {
                client
                    .prepare(registered.text)
                    .await
                    .map(|s| Some((registered.text, s)))
                    .map_err(|e| {
                        tracing::error!(
                            statement = registered.name,
                            role = registered.role,
                            error = %Error::from(e),
                            "a statement does not prepare against this database"
                        );
                        Error::Unregistered(registered.name)
                    })
            }));
        }
    }
    steps.push(Box::pin(async {
        client
            .batch_execute("rollback")
            .await
            .map(|()| None)
            .map_err(Error::from)
    }));
    let prepared = in_order(steps).await;
    if prepared.is_err() {
        // The transaction may be left aborted; the connection is not pooled.
        let _ = client.batch_execute("rollback").await;
    }
    Ok(prepared?.into_iter().flatten().collect())
}

type Prepared = (&'static str, Statement);

/// One request of a pipeline: a boxed future that sends on its first poll.
pub(super) type Step<'a, T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'a>>;

/// Runs `futures` concurrently, polling them in the order given, so a connection receives their
/// requests in that order (tokio-postgres sends a request when its future is first polled).
/// Fails with the first error.
pub(super) async fn in_order<T: Unpin, E>(futures: Vec<Step<'_, T, E>>) -> Result<Vec<T>, E> {
    InOrder {
        pending: futures.into_iter().map(Some).collect(),
        done: Vec::new(),
    }
    .await
}

struct InOrder<'a, T, E> {
    pending: Vec<Option<Step<'a, T, E>>>,
    done: Vec<Option<T>>,
}

impl<T: Unpin, E> Future for InOrder<'_, T, E> {
    type Output = Result<Vec<T>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if this.done.is_empty() {
            this.done = this.pending.iter().map(|_| None).collect();
        }
        let mut all_done = true;
        for (slot, result) in this.pending.iter_mut().zip(this.done.iter_mut()) {
            if let Some(future) = slot {
                match future.as_mut().poll(cx) {
                    Poll::Ready(Ok(value)) => {
                        *result = Some(value);
                        *slot = None;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => all_done = false,
                }
            }
        }
        if all_done {
            Poll::Ready(Ok(this.done.iter_mut().filter_map(Option::take).collect()))
        } else {
            Poll::Pending
        }
    }
}
