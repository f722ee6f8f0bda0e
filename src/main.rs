//! The `aide` command: parse arguments, load configuration, start telemetry, run.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use aide::config::{self, Config};
use aide::db::LOGIN_ROLE;
use aide::db::managed::{self, ManagedPostgres};
use aide::server::{self, Database};
use aide::telemetry;

#[derive(Debug, Parser)]
#[command(name = "aide", version, about = "AIde backend service")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the HTTP server. Without DATABASE_URL it starts a private PostgreSQL cluster under
    /// AIDE_DATA_DIR.
    Serve {
        /// Do not apply pending migrations on start.
        #[arg(long)]
        no_migrate: bool,
    },
    /// Apply pending database migrations and exit.
    Migrate,
    /// Configuration commands.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Commands for the managed local database.
    Db {
        #[command(subcommand)]
        command: DbCommand,
    },
    /// Who has staff access: operators open grants to read one account, audited (see the README).
    Operator {
        #[command(subcommand)]
        command: OperatorCommand,
    },
}

#[derive(Debug, Subcommand)]
enum OperatorCommand {
    /// Make the account with this address an operator.
    Add { email: String },
    /// Take operator rights away (their open grants close at once).
    Remove { email: String },
    /// List the operators.
    List,
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Print the effective configuration (secrets redacted); exit non-zero when it is invalid.
    Check,
}

#[derive(Debug, Subcommand)]
enum DbCommand {
    /// Print the connection URL of the managed cluster, for psql (`psql "$(aide db url)"`).
    Url {
        /// The server's own login role (aide_app) instead of the cluster's superuser.
        #[arg(long)]
        app: bool,
    },
}

/// Exit status for a configuration that does not validate.
const EXIT_INVALID_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let dotenv = config::load_dotenv();
    let config = Config::from_env();

    if let Command::Config {
        command: ConfigCommand::Check,
    } = &cli.command
    {
        return config_check(dotenv, config);
    }

    if let Err(why) = dotenv {
        eprintln!("error: {why}");
        return ExitCode::from(EXIT_INVALID_CONFIG);
    }
    let config = match config {
        Ok(config) => config,
        Err(e) => {
            eprint!("{e}");
            return ExitCode::from(EXIT_INVALID_CONFIG);
        }
    };
    telemetry::init(config.ops.log_format);

    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: could not start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let deployed = config.environment.is_deployed();
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve { no_migrate } => server::serve(config, !no_migrate).await,
            Command::Migrate => migrate(&config).await,
            Command::Db {
                command: DbCommand::Url { app },
            } => db_url(&config, app),
            Command::Config { .. } => Ok(()),
            Command::Operator { command } => operator(&config, command).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Once: as a structured log line where logs are collected, as plain text for a person.
            if deployed {
                tracing::error!(error = format!("{e:#}"), "aide stopped with an error");
            } else {
                eprintln!("error: {e:#}");
            }
            ExitCode::FAILURE
        }
    }
}

fn config_check(
    dotenv: Result<Option<std::path::PathBuf>, String>,
    config: Result<Config, config::ConfigError>,
) -> ExitCode {
    let dotenv_ok = match dotenv {
        Ok(Some(path)) => {
            println!("# read {}", path.display());
            true
        }
        Ok(None) => true,
        Err(why) => {
            eprintln!("error: {why}");
            false
        }
    };
    match config {
        Ok(config) if dotenv_ok => {
            let width = config
                .redacted_summary()
                .iter()
                .map(|(name, _)| name.len())
                .max()
                .unwrap_or(0);
            for (name, value) in config.redacted_summary() {
                println!("{name:<width$} = {value}");
            }
            println!("# configuration is valid");
            ExitCode::SUCCESS
        }
        Ok(_) => ExitCode::from(EXIT_INVALID_CONFIG),
        Err(e) => {
            eprint!("{e}");
            ExitCode::from(EXIT_INVALID_CONFIG)
        }
    }
}

async fn migrate(config: &Config) -> anyhow::Result<()> {
    let database = Database::open(config).await?;
    let result = database.migrate().await;
    database.shutdown().await?;
    let applied = result?;
    if applied.is_empty() {
        println!("the database schema is up to date");
    } else {
        let list: Vec<String> = applied.iter().map(i32::to_string).collect();
        println!("applied migrations {}", list.join(", "));
    }
    Ok(())
}

async fn operator(config: &Config, command: OperatorCommand) -> anyhow::Result<()> {
    use aide::db::operators;
    // The address as sign-in stores it (lower case, the domain in IDNA form).
    let normalised = |raw: &str| -> anyhow::Result<String> {
        aide::auth::EmailAddress::parse(raw)
            .map(|e| e.as_str().to_string())
            .map_err(|why| anyhow::anyhow!("{raw:?} is not an email address: {why}"))
    };
    let command = match command {
        OperatorCommand::Add { email } => OperatorCommand::Add {
            email: normalised(&email)?,
        },
        OperatorCommand::Remove { email } => OperatorCommand::Remove {
            email: normalised(&email)?,
        },
        OperatorCommand::List => OperatorCommand::List,
    };
    // A managed cluster may be running under the server already: use it, else start it.
    let running = if config.database.url.is_none() {
        let root = ManagedPostgres::root_in(&config.data_dir);
        match ManagedPostgres::url_in(&root, managed::SUPERUSER, managed::DATABASE) {
            Ok(url) => match url.parse::<aide::db::ConnectOptions>() {
                Ok(options) => aide::db::connect(&options).await.ok(),
                Err(_) => None,
            },
            Err(_) => None,
        }
    } else {
        None
    };
    let (conn, database) = match running {
        Some(conn) => (conn, None),
        None => {
            let database = Database::open(config).await?;
            database.migrate().await?;
            let conn = aide::db::connect(&database.admin).await?;
            (conn, Some(database))
        }
    };
    let result = match command {
        OperatorCommand::Add { email } => operators::add(&conn, &email).await.map(|added| {
            println!(
                "{email} {}",
                if added {
                    "is now an operator"
                } else {
                    "was an operator already"
                }
            );
        }),
        OperatorCommand::Remove { email } => {
            operators::remove(&conn, &email).await.map(|removed| {
                println!(
                    "{email} {}",
                    if removed {
                        "is no longer an operator"
                    } else {
                        "was not an operator"
                    }
                );
            })
        }
        OperatorCommand::List => operators::list(&conn).await.map(|all| {
            for (email, added) in all {
                println!("{email}\tadded {}", aide::time::rfc3339_string(&added));
            }
        }),
    };
    drop(conn);
    if let Some(database) = database {
        database.shutdown().await?;
    }
    result
}

fn db_url(config: &Config, app: bool) -> anyhow::Result<()> {
    if config.database.url.is_some() {
        anyhow::bail!(
            "DATABASE_URL is set, so aide manages no local cluster; connect with DATABASE_URL instead"
        );
    }
    let user = if app { LOGIN_ROLE } else { managed::SUPERUSER };
    let root = ManagedPostgres::root_in(&config.data_dir);
    let url =
        ManagedPostgres::url_in(&root, user, managed::DATABASE).map_err(anyhow::Error::msg)?;
    println!("{url}");
    Ok(())
}
