//! Command line (ARCHITECTURE.md §2). Pingora's own flags keep their meaning: `-c` config,
//! `-d` daemon, `-u` upgrade, `-t` test the configuration.
//!
//! The manual pages (`siger(8)` and one per subcommand) are generated from these definitions
//! by the hidden `siger manpages` (see [`write_manual_pages`]); `scripts/package-deb` runs it,
//! so the pages always describe the binary they ship with.

use clap::{CommandFactory, Parser, Subcommand};
use std::path::{Path, PathBuf};

/// Default config location when `-c` is not given.
pub const DEFAULT_CONFIG: &str = "/etc/siger/siger.yaml";

/// Siger: an API gateway on Pingora.
#[derive(Debug, Parser)]
#[command(name = "siger", version, about, long_about = LONG_ABOUT, after_long_help = after_long_help())]
pub struct Cli {
    /// Config file (YAML).
    #[arg(short, long, global = true, default_value = DEFAULT_CONFIG)]
    pub conf: PathBuf,
    /// Run in the background (writes `server.pid_file`).
    #[arg(short, long)]
    pub daemon: bool,
    /// Take over the listeners of the running instance (zero-downtime upgrade).
    #[arg(short, long)]
    pub upgrade: bool,
    /// Check the configuration and exit: 0 when valid, 78 otherwise.
    #[arg(short, long)]
    pub test: bool,
    /// Tolerated for compatibility with Pingora's option parser; ignored.
    #[arg(long, hide = true)]
    pub nocapture: bool,
    /// A subcommand instead of running the gateway.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Replace the running instance with a new process (new binary and/or config) without
    /// dropping requests: checks the config, starts `siger -u -d`, then hands the sockets over.
    Upgrade {
        /// PID of the running instance (default: read `server.pid_file`).
        #[arg(long)]
        pid: Option<i32>,
    },
    /// Make a new API key: prints the key (give it to the consumer; it is not stored) and the
    /// line for the keys file (`auth.api_keys.file`), which holds only its SHA-256.
    Apikey {
        /// The consumer the key names (rate limits, access log, `X-Consumer`).
        #[arg(long)]
        consumer: String,
        /// Comma-separated roles.
        #[arg(long, default_value = "")]
        roles: String,
    },
    /// Mint an HS* token with the configured secret (for demos and load tests).
    Token {
        /// `sub` claim.
        #[arg(long)]
        sub: String,
        /// Comma-separated roles.
        #[arg(long, default_value = "")]
        roles: String,
        /// Lifetime, e.g. `1h`.
        #[arg(long, default_value = "1h")]
        ttl: String,
        /// Sign with this PEM private key instead of the config's secret (asymmetric
        /// algorithms, e.g. to exercise a JWKS setup).
        #[arg(long)]
        private_key: Option<PathBuf>,
        /// Algorithm for `--private-key` (default ES256); must be allowed by the config.
        #[arg(long, requires = "private_key")]
        alg: Option<String>,
        /// `kid` header for `--private-key` tokens.
        #[arg(long, requires = "private_key")]
        kid: Option<String>,
    },
    /// Print consumers' usage (requests by status class, bytes in and out, per consumer,
    /// route and day, UTC) as a table or CSV, read from the running gateway's admin listener
    /// (`GET /usage`).
    Usage(UsageArgs),
    /// The fleet's configuration in a NATS JetStream key-value store: the bootstrap file (-c)
    /// names it in `config_source` and keeps `server`, `listen`, `admin`, `nats`; the store
    /// holds every other key, one document per revision, which every gateway follows.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Write the manual pages (roff) generated from this help into a directory.
    #[command(hide = true)]
    Manpages {
        /// The directory (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// The date the pages carry, `YYYY-MM-DD` (default: today, UTC; packages pass the
        /// date of the source, for reproducible builds).
        #[arg(long)]
        date: Option<String>,
    },
}

/// `siger usage`.
#[derive(Debug, Clone, clap::Args)]
pub struct UsageArgs {
    /// One consumer (default: every consumer).
    #[arg(long)]
    pub consumer: Option<String>,
    /// First day, YYYY-MM-DD (UTC).
    #[arg(long)]
    pub from: String,
    /// Last day, included (default: today).
    #[arg(long)]
    pub to: Option<String>,
    /// One route, by its name or path (default: every route).
    #[arg(long)]
    pub route: Option<String>,
    /// Print CSV (RFC 4180) instead of a table.
    #[arg(long)]
    pub csv: bool,
    /// The admin listener, e.g. `http://127.0.0.1:9901` (default: `admin.listen` of the config).
    #[arg(long)]
    pub admin: Option<String>,
}

/// `siger config …` (exit status: 0 done, 78 the configuration or bootstrap file is invalid and
/// nothing was written, 1 the store refused, was unreachable, or another push came first).
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Check FILE (the keys the store holds) merged with the bootstrap file exactly as -t
    /// checks a configuration, the files it names read from this host, then write it as the
    /// store's next revision unless another push came in since it was read.
    Push {
        /// The document: every top-level key but server, listen, admin, nats, config_source.
        file: PathBuf,
        /// Write only if the store is still at this revision (the one a reviewed diff was
        /// made against); without it, the revision read just before writing.
        #[arg(long, value_name = "REV")]
        expect_revision: Option<u64>,
    },
    /// List the revisions the store keeps, oldest first: time, size, digest, who pushed.
    History,
    /// Show how two revisions' documents differ (unified diff); TO defaults to the newest.
    Diff {
        /// The older revision.
        from: u64,
        /// The newer revision (default: the newest).
        to: Option<u64>,
    },
    /// Write an earlier revision's document as the newest revision, checked as push checks.
    Rollback {
        /// The revision whose document becomes the newest again.
        revision: u64,
    },
    /// Every gateway's running revision and its verdict on the newest, so drift shows.
    Status,
    /// Follow the store as a gateway does and print each new revision with whether this host
    /// would apply or refuse it (until interrupted); changes nothing.
    Watch,
    /// Cut a whole configuration file into a bootstrap file and a document to push.
    Split {
        /// The whole configuration file.
        file: PathBuf,
        /// Where the bootstrap part goes (a new file).
        #[arg(long)]
        bootstrap: PathBuf,
        /// Where the document goes (a new file).
        #[arg(long)]
        document: PathBuf,
    },
}

/// The description `siger --help` and the manual page open with.
const LONG_ABOUT: &str = "\
API gateway and edge proxy on Cloudflare Pingora.

Without a subcommand, siger reads its configuration (-c), checks it, and serves in the \
foreground until SIGTERM, logging to stderr; -d runs it in the background instead. The \
configuration keys are described in config.md, with the documentation of the installation \
(/usr/share/doc/siger/ in the Debian package).";

/// The manual page's sections after the options and subcommands, as (heading, paragraphs);
/// `siger --help` prints them too.
const MANUAL_SECTIONS: &[(&str, &[&str])] = &[
    (
        "EXIT STATUS",
        &["0 when the configuration is valid (-t) or the gateway stopped after draining; 78 \
             (EX_CONFIG) when the configuration is invalid: every error names the key and line; 1 \
             on other failures."],
    ),
    (
        "SIGNALS",
        &[
            "SIGTERM and SIGINT: stop accepting, let requests in flight finish \
             (server.grace_period, then up to server.graceful_shutdown_timeout), exit 0.",
            "SIGHUP: reload the configuration; a configuration that does not validate is refused \
             and the one in force keeps serving.",
            "SIGQUIT: hand the listening sockets to a new process started with -u (zero-downtime \
             upgrade), then drain as on SIGTERM.",
        ],
    ),
    (
        "ENVIRONMENT",
        &["RUST_LOG: log filter (default info), e.g. siger=debug. Any variable named in the \
             configuration as ${VAR}: its value; a missing variable is a configuration error. \
             TMPDIR: where the default pid file and upgrade socket go."],
    ),
    ("FILES", &["/etc/siger/siger.yaml: the configuration read when -c is not given."]),
];

/// [`MANUAL_SECTIONS`] as `--help` text.
fn after_long_help() -> String {
    let sections = MANUAL_SECTIONS.iter().map(|(heading, paragraphs)| {
        let heading = heading.split(' ').map(title_case).collect::<Vec<_>>().join(" ");
        format!("{heading}:\n  {}", paragraphs.join("\n  "))
    });
    sections.collect::<Vec<_>>().join("\n\n")
}

fn title_case(word: &str) -> String {
    let lower = word.to_lowercase();
    let mut chars = lower.chars();
    chars.next().map(|c| c.to_uppercase().chain(chars).collect()).unwrap_or_default()
}

/// Write `siger.8` and `siger-<subcommand>.8` for every visible subcommand into `dir`, dated
/// `date` (today when `None`); returns the paths written.
pub fn write_manual_pages(dir: &Path, date: Option<&str>) -> std::io::Result<Vec<PathBuf>> {
    let today;
    let date = match date {
        Some(date) => date,
        None => {
            today = time::OffsetDateTime::now_utc()
                .date()
                .format(time::macros::format_description!("[year]-[month]-[day]"))
                .map_err(std::io::Error::other)?;
            &today
        }
    };
    std::fs::create_dir_all(dir)?;
    let mut root = Cli::command().disable_help_subcommand(true);
    root.build();
    let mut written = Vec::new();
    for sub in root.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("siger-{}", sub.get_name());
        let man = manual(sub.clone().name(name.clone()).bin_name(format!("siger {}", sub.get_name())), date);
        let path = dir.join(format!("{name}.8"));
        let mut page = Vec::new();
        man.render(&mut page)?;
        std::fs::write(&path, page)?;
        written.push(path);
    }
    let path = dir.join("siger.8");
    std::fs::write(&path, root_page(root, date)?)?;
    written.insert(0, path);
    Ok(written)
}

/// A section-8 page's header fields for `cmd`.
fn manual(cmd: clap::Command, date: &str) -> clap_mangen::Man {
    let source = format!("siger {}", env!("CARGO_PKG_VERSION"));
    clap_mangen::Man::new(cmd).section("8").date(date).source(source).manual("System Manager's Manual")
}

/// `siger(8)`: clap_mangen's sections, with [`MANUAL_SECTIONS`] as sections of their own (in
/// place of one "EXTRA" section holding the after-help text).
fn root_page(root: clap::Command, date: &str) -> std::io::Result<Vec<u8>> {
    let man = manual(root.after_long_help(None::<&'static str>), date);
    let mut page = Vec::new();
    man.render_title(&mut page)?;
    man.render_name_section(&mut page)?;
    man.render_synopsis_section(&mut page)?;
    man.render_description_section(&mut page)?;
    man.render_options_section(&mut page)?;
    man.render_subcommands_section(&mut page)?;
    let mut roff = roff::Roff::new();
    for (heading, paragraphs) in MANUAL_SECTIONS {
        roff.control("SH", [*heading]);
        for (i, paragraph) in paragraphs.iter().enumerate() {
            if i > 0 {
                roff.control("PP", []);
            }
            roff.text([roff::roman(*paragraph)]);
        }
    }
    roff.to_writer(&mut page)?;
    man.render_version_section(&mut page)?;
    Ok(page)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Every visible flag of `cmd`, as roff writes it (`\-\-conf`).
    fn flags(cmd: &clap::Command) -> Vec<String> {
        cmd.get_arguments()
            .filter(|a| !a.is_hide_set())
            .filter_map(|a| a.get_long())
            .map(|l| format!("\\-\\-{}", l.replace('-', "\\-")))
            .collect()
    }

    #[test]
    fn manual_pages_cover_every_visible_flag_and_subcommand() {
        let dir = tempfile::tempdir().unwrap();
        let written = write_manual_pages(dir.path(), Some("2026-12-01")).unwrap();
        let names: Vec<_> = written.iter().map(|p| p.file_name().unwrap().to_str().unwrap().to_string()).collect();
        assert_eq!(
            names,
            ["siger.8", "siger-upgrade.8", "siger-apikey.8", "siger-token.8", "siger-usage.8", "siger-config.8"]
        );

        let root = Cli::command();
        let page = std::fs::read_to_string(dir.path().join("siger.8")).unwrap();
        assert!(page.contains(".TH siger 8 2026-12-01 \"siger "), "{page}");
        assert!(page.contains("siger \\- API gateway"), "a whatis entry: {page}");
        for flag in flags(&root) {
            assert!(page.contains(&flag), "siger.8 lacks {flag}");
        }
        for heading in ["SYNOPSIS", "DESCRIPTION", "OPTIONS", "SUBCOMMANDS", "\"EXIT STATUS\"", "SIGNALS", "FILES"] {
            assert!(page.contains(&format!(".SH {heading}\n")), "siger.8 lacks {heading}");
        }
        assert!(!page.contains("manpages"), "the hidden subcommand stays out of the manual");
        for sub in root.get_subcommands().filter(|s| !s.is_hide_set()) {
            assert!(
                page.contains(&format!("siger\\-{}(8)", sub.get_name())),
                "siger.8 lacks siger-{}(8)",
                sub.get_name()
            );
            let sub_page = std::fs::read_to_string(dir.path().join(format!("siger-{}.8", sub.get_name()))).unwrap();
            assert!(sub_page.contains(&format!("\\fBsiger {}\\fR", sub.get_name())), "{sub_page}");
            for flag in flags(sub) {
                assert!(sub_page.contains(&flag), "siger-{}.8 lacks {flag}", sub.get_name());
            }
        }
    }

    #[test]
    fn long_help_carries_the_manual_sections() {
        let help = Cli::command().render_long_help().to_string();
        for needle in ["Exit Status:", "Signals:", "SIGHUP: reload", "Environment:", "Files:", "/etc/siger/siger.yaml"]
        {
            assert!(help.contains(needle), "siger --help lacks {needle:?}:\n{help}");
        }
    }
}
