//! Running the service: choosing the database (managed or external), migrating, serving, and
//! shutting down in order.

mod accept;

pub use accept::{ServeOptions, serve as serve_listener};

use std::sync::Arc;
use std::time::Duration;

use secrecy::ExposeSecret;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::app::build_app;
use crate::auth::SessionKey;
use crate::config::Config;
use crate::db::managed::{self, ClusterOptions, ManagedPostgres};
use crate::db::{ConnectOptions, Db, migrate};
use crate::email::{self, Mailer};
use crate::state::AppState;
use crate::storage::Storage;
use crate::{jobs, secrets};

/// Where the database is, once resolved: connection options for the server's login role and for
/// migrations, and the managed cluster when there is one.
pub struct Database {
    pub app: ConnectOptions,
    pub admin: ConnectOptions,
    pub managed: Option<ManagedPostgres>,
}

impl Database {
    /// Connects to DATABASE_URL, or starts the managed cluster when it is unset.
    pub async fn open(config: &Config) -> anyhow::Result<Self> {
        match &config.database.url {
            Some(url) => {
                let app: ConnectOptions = url
                    .expose_secret()
                    .parse()
                    .map_err(|e| anyhow::anyhow!("DATABASE_URL could not be used: {e}"))?;
                let admin = match &config.database.admin_url {
                    Some(admin) => admin.expose_secret().parse().map_err(|e| {
                        anyhow::anyhow!("DATABASE_ADMIN_URL could not be used: {e}")
                    })?,
                    None => app.clone(),
                };
                Ok(Database {
                    app,
                    admin,
                    managed: None,
                })
            }
            None => {
                let root = ManagedPostgres::root_in(&config.data_dir);
                let options = ClusterOptions {
                    bindir: config.database.pg_bindir.clone(),
                    ephemeral: false,
                };
                let cluster = ManagedPostgres::start(&root, options)
                    .await
                    .map_err(anyhow::Error::msg)?;
                cluster.ensure_database(managed::DATABASE).await?;
                Ok(Database {
                    app: cluster.app_options(managed::DATABASE),
                    admin: cluster.admin_options(managed::DATABASE),
                    managed: Some(cluster),
                })
            }
        }
    }

    /// Applies pending migrations over the administrative connection.
    pub async fn migrate(&self) -> anyhow::Result<Vec<i32>> {
        let conn = crate::db::connect(&self.admin).await?;
        Ok(migrate::run(&conn).await?)
    }

    /// Stops the managed cluster, if any.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        if let Some(cluster) = self.managed {
            cluster.stop().await.map_err(anyhow::Error::msg)?;
        }
        Ok(())
    }
}

/// How long running turns get to finish after the shutdown signal.
const TURN_GRACE: Duration = Duration::from_secs(20);

/// `aide serve`: runs until SIGTERM or SIGINT, letting in-flight requests finish.
pub async fn serve(config: Config, run_migrations: bool) -> anyhow::Result<()> {
    let database = Database::open(&config).await?;
    let result = serve_on(&config, &database, run_migrations).await;
    database.shutdown().await?;
    result
}

async fn serve_on(
    config: &Config,
    database: &Database,
    run_migrations: bool,
) -> anyhow::Result<()> {
    if run_migrations {
        let applied = database.migrate().await?;
        tracing::info!(
            migrations.applied = applied.len(),
            "database schema is up to date"
        );
    }
    let session_key = SessionKey::new(secrets::jwt_secret(config).map_err(anyhow::Error::msg)?);
    let mailer = Mailer::from_config(config)?;
    // One connection of the budget listens for page changes; the rest are the pool.
    let db = Db::new(
        database.app.clone(),
        config.database.max_connections.saturating_sub(1),
    );
    // The pool opens in the background: the server listens (and answers /ready) at once, even
    // while the database is down.
    tokio::spawn({
        let db = db.clone();
        async move {
            let warmed = db.warm().await;
            tracing::debug!(database.connections = warmed, "connection pool opened");
        }
    });
    let listener = TcpListener::bind(config.listen_addr())
        .await
        .map_err(|e| anyhow::anyhow!("could not listen on {}: {e}", config.listen_addr()))?;
    tracing::info!(
        address = %listener.local_addr()?,
        app_url = %config.app_url,
        environment = config.environment.as_str(),
        "listening"
    );
    let storage = Storage::from_config(config)?;
    let state = AppState::new(Arc::new(config.clone()), db.clone(), session_key, storage);
    if let Some(reporter) = &state.reporter {
        crate::sentry::Reporter::set_global(reporter.clone());
    }

    let (stop_workers, workers_stop) = watch::channel(false);
    let outbox = tokio::spawn(
        email::Worker::new(db.clone(), mailer, state.outbox_wake.clone())
            .counting(state.ops_counts.clone())
            .run(workers_stop.clone()),
    );
    let storage_cleanup = tokio::spawn(crate::storage::run_cleanup(
        db.clone(),
        state.storage.clone(),
        state.storage_cleanup_wake.clone(),
        workers_stop.clone(),
    ));
    let page_listener = tokio::spawn(crate::notify::listen(
        state.live_pages.clone(),
        state.turns.clone(),
        db.clone(),
        workers_stop.clone(),
    ));
    let turn_janitor = tokio::spawn(jobs::run_turn_janitor(db.clone(), workers_stop.clone()));
    let billing = tokio::spawn(jobs::run_billing(state.clone(), workers_stop.clone()));
    let alerts = state.slack.clone().map(|slack| {
        tokio::spawn(crate::alerts::run(
            state.clone(),
            slack,
            workers_stop.clone(),
        ))
    });
    let exports = tokio::spawn(jobs::run_account_upkeep(
        state.clone(),
        workers_stop.clone(),
    ));
    let cleanup = tokio::spawn(jobs::run_cleanup(db.clone(), workers_stop));

    for warning in config.warnings() {
        tracing::warn!("{warning}");
    }
    let options = ServeOptions {
        header_timeout: Duration::from_secs(u64::from(config.limits.http_header_timeout_seconds)),
        write_stall: Duration::from_secs(3 * u64::from(config.limits.http_header_timeout_seconds)),
        max_connections: connection_cap(config.limits.http_max_connections),
        grace: Duration::from_secs(30),
    };
    let turns = state.turns.clone();
    let reporter = state.reporter.clone();
    let drain = Duration::from_secs(u64::from(config.limits.shutdown_ready_drain_seconds));
    let stopping = {
        let state = state.clone();
        async move {
            shutdown_signal().await;
            // Readiness fails first, so load balancers stop sending traffic; the listener closes
            // after that, and requests under way then get their grace to finish.
            state
                .draining
                .store(true, std::sync::atomic::Ordering::Release);
            tracing::info!(
                seconds = drain.as_secs(),
                "not ready any more; closing the listener after the drain"
            );
            tokio::time::sleep(drain).await;
        }
    };
    accept::serve(listener, build_app(state), options, stopping).await;
    tracing::info!("stopped accepting requests; shutting down");
    // Turns run in tasks of their own: let them finish, then stop the rest, which record
    // themselves as interrupted (or given back) while the database is still there.
    if !turns.wait_idle(TURN_GRACE).await {
        tracing::warn!("turns still running after the grace period; stopping them");
        turns.cancel_all();
        turns.wait_idle(Duration::from_secs(10)).await;
    }

    // In-flight requests are done; let the workers finish what they hold (a claimed email is
    // retried by the next start if this one is cut short).
    let _ = stop_workers.send(true);
    let finish = async {
        let _ = outbox.await;
        let _ = cleanup.await;
        let _ = turn_janitor.await;
        let _ = billing.await;
        let _ = storage_cleanup.await;
        let _ = exports.await;
        let _ = page_listener.await;
        if let Some(alerts) = alerts {
            let _ = alerts.await;
        }
    };
    if tokio::time::timeout(Duration::from_secs(20), finish)
        .await
        .is_err()
    {
        tracing::warn!("background workers did not stop in time");
    }
    if let Some(reporter) = &reporter
        && !reporter.flush(Duration::from_secs(2)).await
    {
        tracing::warn!("error reports still unsent at shutdown were dropped");
    }
    db.close();
    Ok(())
}

/// HTTP_MAX_CONNECTIONS, lowered to what the process's descriptor limit allows (after raising
/// its soft limit as far as the hard one), keeping room for the database, storage and logs.
fn connection_cap(configured: u32) -> usize {
    const RESERVED: u64 = 128;
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed to them.
    let available = unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return configured as usize;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
        limit.rlim_cur
    };
    let cap = u64::from(configured).min(available.saturating_sub(RESERVED).max(16));
    if cap < u64::from(configured) {
        tracing::warn!(
            http.max_connections = cap,
            configured,
            "HTTP_MAX_CONNECTIONS lowered to fit the process's file descriptor limit"
        );
    }
    cap as usize
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let interrupt = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "could not listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "could not listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = interrupt => tracing::info!("received SIGINT"),
        () = terminate => tracing::info!("received SIGTERM"),
    }
}
