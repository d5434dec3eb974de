//! `cdc-sink`: parse arguments, load settings, run the worker until a signal.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use cdc_sink::settings::Settings;

/// mimalloc: the hot path allocates a few small buffers per record.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use cdc_sink::worker;

#[derive(Parser)]
#[command(
    name = "cdc-sink",
    version,
    about = "Kafka Connect-style sink worker for Debezium change events"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start a worker running the given connectors.
    Run {
        /// Worker settings (TOML); environment variables CDC_SINK_<SECTION>__<KEY> override it.
        #[arg(long)]
        config: Option<PathBuf>,
        /// A connector config (`{"name": …, "config": {…}}`); repeat for several.
        #[arg(long = "connector")]
        connectors: Vec<PathBuf>,
    },
    /// Check connector configs and print every problem found.
    Validate {
        /// Worker settings (TOML): the connectors' Kafka clients are checked with their
        /// `[kafka.properties]` (without it, with the defaults and `CDC_SINK_*` variables).
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(required = true)]
        connectors: Vec<PathBuf>,
    },
    /// Rebuild a connector's indices from its topics into new physical indices behind their
    /// aliases, and move the aliases once caught up with the live connector.
    Rebuild {
        /// Worker settings (TOML), for the Kafka connection.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Move the aliases back to the indices the last rebuild replaced (caught up first).
        #[arg(long)]
        rollback: bool,
        /// Rebuild even though a topic no longer holds its records from its beginning
        /// (retention, DeleteRecords): only when the records kept hold every row, such as after
        /// a snapshot taken since.
        #[arg(long)]
        allow_truncated_topics: bool,
        /// The connector config (`{"name": …, "config": {…}}`).
        connector: PathBuf,
    },
    /// Print a Druid Kafka supervisor spec for each topic a `druid` connector writes (columns
    /// and types learned from the last records of its topics).
    DruidSpec {
        /// Worker settings (TOML), for the Kafka connection.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Submit each spec to the Druid overlord (or router) at this URL instead of printing
        /// them: `POST URL/druid/indexer/v1/supervisor`.
        #[arg(long, value_name = "URL")]
        submit: Option<String>,
        /// The connector config (`{"name": …, "config": {…}}`).
        connector: PathBuf,
    },
    /// Print a worker's connectors and tasks as a table: states, lag, records/s, ETA and
    /// freshness (p99 of Kafka timestamp → acknowledged).
    Status {
        /// The worker's REST API.
        #[arg(long, default_value = "http://127.0.0.1:8083")]
        url: String,
    },
    /// Replay a connector's topics and compare the result with its indices: documents missing,
    /// extra, differing or at an older version. Exit status 1 when they drifted.
    Verify {
        /// Worker settings (TOML), for the Kafka connection.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Compare two indices (on the connector's Elasticsearch) instead: `--compare A B`
        /// reports B against A.
        #[arg(long, num_args = 2, value_names = ["A", "B"])]
        compare: Vec<String>,
        /// The connector config (`{"name": …, "config": {…}}`).
        connector: PathBuf,
    },
}

/// Worker settings and one connector, for the commands that act on a connector; `None` once
/// the problem is printed.
fn load_one(
    config: Option<&std::path::Path>,
    connector: &std::path::Path,
) -> Option<(Settings, cdc_sink::connector::ConnectorSpec)> {
    let loaded = Settings::load(config)
        .map_err(|e| format!("invalid settings: {e}"))
        .and_then(|settings| {
            let spec =
                worker::load_connector(connector).map_err(|e| format!("invalid connector: {e}"))?;
            Ok((settings, spec))
        });
    loaded.map_err(|e| eprintln!("cdc-sink: {e}")).ok()
}

/// The worker settings of `config` (and the defaults and `CDC_SINK_*` variables), or `None`
/// once the problem is printed.
fn load_settings(config: Option<&std::path::Path>) -> Option<Settings> {
    Settings::load(config)
        .map_err(|e| eprintln!("cdc-sink: invalid settings: {e}"))
        .ok()
}

/// librdkafka allocates with the C library's `malloc`, not mimalloc: each fetched batch is
/// decompressed into a buffer of megabytes that grows by `realloc`, and freed on the task thread
/// once its records are handled. glibc's defaults hand such buffers back to the kernel (heap
/// trimming past 128 KiB of free memory, `mmap` for big blocks, both thresholds moving with
/// use), so the next batch is written into fresh pages the kernel must fault in and zero:
/// 6 KB records with schema took 34 000–73 000 page faults per 63 000 records over two batches
/// of runs. Keeping freed memory (a thread arena's heap, at most 64 MiB, no longer shrinks) and
/// serving blocks up to 32 MiB from the heap brought that to 18 000–23 000 and the worker's
/// CPU down by a tenth to a fifth in alternated runs (docs/performance-log.md). Any `glibc.malloc`
/// tunable in `GLIBC_TUNABLES`, or any `MALLOC_*` variable, leaves glibc as it is instead.
fn keep_freed_memory() {
    // 64-bit only: older glibc refuses an mmap threshold above half a heap (1 MiB on 32-bit).
    #[cfg(all(target_os = "linux", target_env = "gnu", target_pointer_width = "64"))]
    {
        let user_set = std::env::var_os("GLIBC_TUNABLES")
            .is_some_and(|t| t.to_string_lossy().contains("glibc.malloc."))
            || std::env::vars_os().any(|(k, _)| k.to_string_lossy().starts_with("MALLOC_"));
        if !user_set {
            // SAFETY: mallopt only changes the allocator's thresholds; called before any other
            // thread exists. The trim threshold is set only once the mmap threshold was taken:
            // setting either fixes both, and a fixed 128 KiB mmap threshold would be slower.
            unsafe {
                if libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20) == 1 {
                    libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20);
                }
            }
        }
    }
}

fn main() -> ExitCode {
    keep_freed_memory();
    cdc_sink::tls::install_default();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match Cli::parse().command {
        Command::Validate { config, connectors } => {
            let Some(settings) = load_settings(config.as_deref()) else {
                return ExitCode::from(2);
            };
            let mut ok = true;
            for path in connectors {
                match worker::load_connector(&path)
                    .and_then(|spec| worker::checked_clients(&settings, spec, &path))
                {
                    Ok(spec) => println!("{}: connector `{}` is valid", path.display(), spec.name),
                    Err(e) => {
                        ok = false;
                        eprintln!("{e}");
                    }
                }
            }
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Command::Rebuild {
            config,
            rollback,
            allow_truncated_topics,
            connector,
        } => {
            let Some((settings, spec)) = load_one(config.as_deref(), &connector) else {
                return ExitCode::from(2);
            };
            match cdc_sink::rebuild::run(&settings, &spec, rollback, allow_truncated_topics) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("cdc-sink: rebuild: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::DruidSpec {
            config,
            submit,
            connector,
        } => {
            let Some((settings, spec)) = load_one(config.as_deref(), &connector) else {
                return ExitCode::from(2);
            };
            let specs = cdc_sink::druid_spec::run(&settings, &spec);
            if let Some(url) = submit {
                let submitted = specs.and_then(|specs| cdc_sink::druid_spec::submit(&specs, &url));
                return match submitted {
                    Ok(ids) => {
                        for id in ids {
                            println!("submitted the supervisor of {id}");
                        }
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("cdc-sink: druid-spec: {e}");
                        ExitCode::FAILURE
                    }
                };
            }
            match specs {
                Ok(specs) => {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&specs).unwrap_or_default()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("cdc-sink: druid-spec: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Verify {
            config,
            compare,
            connector,
        } => {
            let Some((settings, spec)) = load_one(config.as_deref(), &connector) else {
                return ExitCode::from(2);
            };
            let report = match compare.as_slice() {
                [a, b] => cdc_sink::verify::compare(&spec, a, b),
                _ => cdc_sink::verify::run(&settings, &spec),
            };
            match report {
                Ok(report) => {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&report).unwrap_or_default()
                    );
                    if report.drift() {
                        eprintln!("cdc-sink: the indices drifted from the topics (see above)");
                        ExitCode::FAILURE
                    } else {
                        eprintln!(
                            "cdc-sink: {} records replayed; the indices match",
                            report.records
                        );
                        ExitCode::SUCCESS
                    }
                }
                Err(e) => {
                    eprintln!("cdc-sink: verify: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Status { url } => match cdc_sink::status::table(&url) {
            Ok(t) => {
                print!("{t}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("cdc-sink: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Run { config, connectors } => {
            let Some(settings) = load_settings(config.as_deref()) else {
                return ExitCode::from(2);
            };
            let mut specs = Vec::new();
            for path in &connectors {
                match worker::load_connector(path).and_then(|spec| match settings.distributed() {
                    // Distributed, a file of a connector the cluster knows is left as the
                    // cluster has it (serve.rs), and a new one is checked as it is created.
                    true => Ok(spec),
                    false => worker::checked_clients(&settings, spec, path),
                }) {
                    Ok(spec) => specs.push(spec),
                    Err(e) => {
                        eprintln!("cdc-sink: invalid connector: {e}");
                        return ExitCode::from(2);
                    }
                }
            }
            match cdc_sink::serve::run(settings, specs) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => {
                    eprintln!("cdc-sink: stopped with failed tasks (see the log)");
                    ExitCode::FAILURE
                }
                Err(e) => {
                    eprintln!("cdc-sink: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
