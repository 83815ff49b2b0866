//! `ledger`: the AVL command line — records from the shell, export/import, load test,
//! verification, health, migrations.
//!
//! # Layout
//! - `main.rs`: argument parsing, the metrics exporter (`--metrics-addr`) and dispatch.
//! - `loadtest.rs`: `ledger loadtest`; `loadtest_log.rs`: its checkpoint wait and lag;
//!   `loadtest_subscribe.rs`: its `--subscribe` live-lag measurement.
//! - `verify.rs`: `ledger verify`.
//! - `health.rs`: `ledger health`.
//! - `migrate.rs`: `ledger migrate up|down|status|fresh`.
//! - `keygen.rs`, `checkpoint.rs`, `prove.rs`, `verify_receipt.rs`: the transparency log's
//!   commands (`keygen`, `checkpoint`, `prove`, `verify-receipt`).
//! - `verify_log.rs`: the log half of `ledger verify` (`--key`, `--since`).
//! - `append.rs`: `ledger append` (JSON Lines in, one acknowledgement per line out).
//! - `get.rs`, `records.rs`, `anchors.rs`: `ledger get`, `ledger records`, `ledger anchors`.
//! - `export.rs`, `import.rs`: `ledger export`, `ledger import`.
//! - `tail.rs`: `ledger tail` (the records in log order with their positions; `--follow`).
//! - `read.rs`: how the commands that only read open the store.
//! - `parts.rs`: `--partition N` of the commands that use one partition's log.
//! - `serve.rs`: `ledger serve` (the log as C2SP tlog-tiles over HTTP, receipts).

mod anchors;
mod append;
mod checkpoint;
mod export;
mod get;
mod health;
mod import;
mod keygen;
mod loadtest;
mod loadtest_log;
mod loadtest_subscribe;
mod migrate;
mod parts;
mod prove;
mod read;
mod records;
mod recover_spool;
mod serve;
mod tail;
mod verify;
mod verify_log;
mod verify_receipt;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ledger_actors::LedgerConfig;

// mimalloc: the ledger allocates many small, short-lived objects per append (messages,
// futures, JSON nodes); glibc malloc spent ~15% of a loadtest in malloc/free.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Turns transparent huge pages off for this process (Linux), before any worker thread
/// starts. mimalloc asks for huge pages on its arenas, and the kernel then zeroes 2 MiB at
/// every first touch: in the memory load test that zeroing was ~20 % of all CPU samples
/// (`perf record`), and without it W1 ran ~9 % faster and 1M anchors × 2 peaked 4 % lower
/// (README, "Benchmarks"). A refusal only costs that speed, so it is logged, not fatal.
fn without_huge_pages() {
    #[cfg(target_os = "linux")]
    if let Err(e) = nix::sys::prctl::set_thp_disable(true) {
        tracing::debug!(error = %e, "transparent huge pages stay on");
    }
}

/// AVL — the Autonomous Verification Ledger.
#[derive(Parser)]
#[command(name = "ledger", version, about)]
struct Cli {
    /// YAML file with a `ledger:` section (else $LEDGER_CONFIG; LEDGER_* variables override).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Serve Prometheus metrics on this address while the command runs (e.g.
    /// 127.0.0.1:9464; keep it on loopback unless the network is trusted). Default: none.
    #[arg(long, global = true, env = "LEDGER_METRICS_ADDR", value_name = "ADDR")]
    metrics_addr: Option<SocketAddr>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Append N×M records with C in flight, verify every chain, print throughput and latency.
    Loadtest(loadtest::Args),
    /// Verify every chain (or one), read-only: exit 0 when intact, 1 with each break listed,
    /// 2 when the store cannot be read (e.g. the database is unreachable).
    Verify(verify::Args),
    /// Open the ledger read-only from the configuration and report its health: exit 0 healthy,
    /// 1 degraded, 2 down.
    Health(health::Args),
    /// Database schema against LEDGER_DSN: up, down [-n N | --all], status, fresh
    /// (destructive: drops every table). Exit 0 done, 2 on error.
    Migrate(migrate::Args),
    /// Write a checkpoint signing key pair: DIR/checkpoint.key (0600) and DIR/checkpoint.pub.
    Keygen(keygen::Args),
    /// Print the latest checkpoint (signed note; --json: size, root, note). Exit 1: none.
    Checkpoint(checkpoint::Args),
    /// Print a receipt for RID (`> receipt.json`), or with --consistency OLD (and optionally NEW) a
    /// consistency proof. Exit 1: not covered by a checkpoint yet.
    Prove(prove::Args),
    /// Check a receipt offline with the verifier key (no database, no configuration):
    /// exit 0 valid, 1 invalid with the reason.
    VerifyReceipt(verify_receipt::Args),
    /// Append records from JSON Lines on stdin; print one JSON acknowledgement (or error)
    /// per line. Exit 0 all appended, 1 a line failed, 2 cannot start.
    Append(append::Args),
    /// Print one record. Exit 0 found, 1 not found, 2 cannot read.
    Get(get::Args),
    /// List one anchor's records in chain order. Exit 0, 1 unknown anchor, 2 cannot read.
    Records(records::Args),
    /// List anchors with their record count and head. Exit 0, 2 cannot read.
    Anchors(anchors::Args),
    /// Write records as JSON Lines (docs/OPERATIONS.md, "Export format"). Exit 0 complete,
    /// 2 otherwise.
    Export(export::Args),
    /// Verify and import an export (idempotent, resumable). Exit 0 all in, 1 refused records
    /// or a cut-short input, 2 stopped (run again to resume).
    Import(import::Args),
    /// Write the records left in the spool (an outage's, or the memory backend's rollback
    /// window) to PostgreSQL and list every re-chained record. Exit 0 all written, 1 records
    /// kept or a corrupt tail, 2 could not run (nothing written).
    RecoverSpool(recover_spool::Args),
    /// Serve the log read-only over HTTP (C2SP tlog-tiles: /checkpoint, /tile/..., plus
    /// /receipt/RID) until SIGINT/SIGTERM. Exit 0 after a graceful stop, 2 cannot start.
    Serve(serve::Args),
    /// Print the records in log order with their positions (`--after POSITION` to resume,
    /// `--follow` to go on live, `--json` for JSON lines). Exit 0, 2 cannot read.
    Tail(tail::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LEDGER_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    without_huge_pages();
    // Offline commands: no configuration, no database.
    let offline = match cli.command {
        Command::Keygen(args) => keygen::run(args),
        Command::VerifyReceipt(args) => verify_receipt::run(args),
        command => return run_online(cli.config, cli.metrics_addr, command),
    };
    offline.unwrap_or_else(|e| {
        eprintln!("ledger: {e:#}");
        ExitCode::from(2)
    })
}

fn run_online(
    config_path: Option<PathBuf>,
    metrics_addr: Option<SocketAddr>,
    command: Command,
) -> ExitCode {
    // `migrate` uses the DSN whatever the backend: no "DSN without backend" warning there.
    let loaded = match command {
        Command::Migrate(_) => LedgerConfig::load_for_migrations(config_path.as_deref()),
        _ => LedgerConfig::load(config_path.as_deref()),
    };
    let config = match loaded {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ledger: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(addr) = metrics_addr {
        // Once, before the command runs: the recorder is process-wide.
        if let Err(e) = ledger_actors::metrics::install(addr) {
            eprintln!("ledger: {e}");
            return ExitCode::from(2);
        }
    }
    let system = actix::System::new();
    let result = system.block_on(async move {
        match command {
            Command::Loadtest(args) => loadtest::run(config, args).await,
            Command::Verify(args) => verify::run(config, args).await,
            Command::Health(args) => health::run(config, args).await,
            Command::Migrate(args) => migrate::run(config, args).await,
            Command::Checkpoint(args) => checkpoint::run(config, args).await,
            Command::Prove(args) => prove::run(config, args).await,
            // Dispatched by `main` before the configuration loads.
            Command::Keygen(_) | Command::VerifyReceipt(_) => Err(anyhow::anyhow!(
                "offline command reached the online dispatcher"
            )),
            Command::Append(args) => append::run(config, args).await,
            Command::Get(args) => get::run(config, args).await,
            Command::Records(args) => records::run(config, args).await,
            Command::Anchors(args) => anchors::run(config, args).await,
            Command::Export(args) => export::run(config, args).await,
            Command::Import(args) => import::run(config, args).await,
            Command::RecoverSpool(args) => recover_spool::run(config, args).await,
            Command::Serve(args) => serve::run(config, args).await,
            Command::Tail(args) => tail::run(config, args).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ledger: {e:#}");
            ExitCode::from(2)
        }
    }
}
