use clap::Parser;
use siger::cli::{Cli, Command};
use siger::{app, auth, config_store, observability::logger};
use std::process::ExitCode;

// glibc malloc/free was ~20% of a request's instructions in a callgrind profile; mimalloc's
// thread-local free lists make them a fraction of that.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// sysexits.h EX_CONFIG: what `-t` and start-up return for an invalid configuration.
const EX_CONFIG: u8 = 78;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // One crypto provider for every TLS config in the process, before any is built.
    siger::tls::install_process_provider();
    // A SIGHUP before the reload handler is installed would end the process (the default action).
    app::catch_hangups_early();
    if let Some(Command::Upgrade { pid }) = &cli.command {
        return match siger::upgrade::upgrade(&cli.conf, *pid) {
            Ok(new) => {
                eprintln!("siger upgraded: new main PID {new}");
                ExitCode::SUCCESS
            }
            Err(siger::upgrade::UpgradeError::Config(errors)) => {
                eprint!("{errors}");
                eprintln!("upgrade refused: the running instance keeps serving");
                ExitCode::from(EX_CONFIG)
            }
            Err(e) => {
                eprintln!("siger upgrade: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if let Some(Command::Manpages { out, date }) = &cli.command {
        return match siger::cli::write_manual_pages(out, date.as_deref()) {
            Ok(pages) => {
                for page in pages {
                    println!("{}", page.display());
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("siger manpages: cannot write into {}: {e}", out.display());
                ExitCode::FAILURE
            }
        };
    }
    if let Some(Command::Config(command)) = &cli.command {
        return siger::config_store::command::run(command, &cli.conf);
    }
    if let Some(Command::Apikey { consumer, roles }) = &cli.command {
        let roles: Vec<String> = roles.split(',').map(str::trim).filter(|r| !r.is_empty()).map(String::from).collect();
        let (key, entry) = auth::api_keys::new_key(consumer, &roles);
        println!("key:   {key}");
        println!("entry: {entry}");
        return ExitCode::SUCCESS;
    }
    if let Some(Command::Usage(args)) = &cli.command {
        return siger::usage::command(&cli.conf, || app::admin_address(&cli.conf), args);
    }
    if cli.command.is_none() && config_store::gateway::configured(&cli.conf) {
        return follow_a_store(&cli);
    }
    // A command beside a gateway that follows a store reads what this host last applied.
    let checked = if config_store::gateway::configured(&cli.conf) {
        config_store::gateway::applied(&cli.conf).map_err(|errors| errors.iter().map(ToString::to_string).collect())
    } else {
        app::check(&cli.conf).map_err(|errors| errors.to_string())
    };
    let checked = match checked {
        Ok(c) => c,
        Err(errors) => {
            eprint!("{errors}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    let config = checked.config();
    if let Some(Command::Token { sub, roles, ttl, private_key, alg, kid }) = &cli.command {
        let signer =
            auth::mint::Signer { private_key: private_key.as_deref(), alg: alg.as_deref(), kid: kid.as_deref() };
        // Only the token goes to stdout, so `TOKEN=$(siger token …)` just works.
        return match auth::mint::from_cli(config.auth.as_ref(), &signer, sub, roles, ttl) {
            Ok(token) => {
                println!("{token}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("siger token: {e}");
                ExitCode::from(EX_CONFIG)
            }
        };
    }
    for warning in &config.warnings {
        eprintln!("{}: warning: {warning}", cli.conf.display());
    }
    // Reloads read the file again, and the daemon runs from `/`: keep its absolute path.
    let path = std::path::absolute(&cli.conf).unwrap_or_else(|_| cli.conf.clone());
    if cli.test {
        let jobs = config.jobs.as_ref().map(|j| format!(", jobs at {}", j.path)).unwrap_or_default();
        let summary = format!(
            "{}: configuration OK ({} listeners, {} services, {} routes{jobs})",
            cli.conf.display(),
            config.listeners.len(),
            config.services.len(),
            config.routes.len() - usize::from(config.jobs.is_some()),
        );
        // What a start would build, built and dropped: `-t` refuses what a start would.
        app::dry_run(checked, &path);
        eprintln!("{summary}");
        return ExitCode::SUCCESS;
    }
    logger::init();
    app::run(checked, &path, app::Launch { daemon: cli.daemon, upgrade: cli.upgrade });
    ExitCode::SUCCESS
}

/// A gateway whose `-c` file is a bootstrap file (`config_source`): `-t` checks it (and the
/// cache file's revision); a start takes the store's newest revision, else the cache file's,
/// else the bootstrap file alone (docs/fleet.md).
fn follow_a_store(cli: &Cli) -> ExitCode {
    let path = std::path::absolute(&cli.conf).unwrap_or_else(|_| cli.conf.clone());
    let invalid = |errors: Vec<siger::config::ConfigErrors>| {
        for e in errors {
            eprint!("{e}");
        }
        ExitCode::from(EX_CONFIG)
    };
    if cli.test {
        return match config_store::gateway::test(&path) {
            Ok(summary) => {
                eprintln!("{}: {summary}", cli.conf.display());
                ExitCode::SUCCESS
            }
            Err(errors) => invalid(errors),
        };
    }
    logger::init();
    match config_store::gateway::start(&path) {
        Ok(start) => {
            app::run_fleet(start, &path, app::Launch { daemon: cli.daemon, upgrade: cli.upgrade });
            ExitCode::SUCCESS
        }
        Err(errors) => {
            logger::flush();
            invalid(errors)
        }
    }
}
