use clap::Parser;
use siger::cli::{Cli, Command};
use siger::{app, auth, config, observability::logger};
use std::process::ExitCode;

/// sysexits.h EX_CONFIG: what `-t` and start-up return for an invalid configuration.
const EX_CONFIG: u8 = 78;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match config::load(&cli.conf) {
        Ok(c) => c,
        Err(errors) => {
            eprint!("{errors}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    if let Some(Command::Token { sub, roles, ttl }) = &cli.command {
        // Only the token goes to stdout, so `TOKEN=$(siger token …)` just works.
        return match auth::mint::from_cli(config.auth.as_ref(), sub, roles, ttl) {
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
    if cli.test {
        eprintln!(
            "{}: configuration OK ({} listeners, {} services, {} routes)",
            cli.conf.display(),
            config.listeners.len(),
            config.services.len(),
            config.routes.len()
        );
        return ExitCode::SUCCESS;
    }
    logger::init();
    app::run(config, app::Launch { daemon: cli.daemon, upgrade: cli.upgrade });
    ExitCode::SUCCESS
}
