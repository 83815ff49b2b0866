//! `ledger verify-receipt`: checks a receipt offline, with only the verifier key.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use ledger_tlog::note::NoteVerifier;

/// Arguments of `ledger verify-receipt`.
#[derive(clap::Args)]
pub struct Args {
    /// The receipt (JSON, as `ledger prove RID` writes it); `-` reads standard input.
    file: PathBuf,
    /// The verifier key file (`checkpoint.pub`).
    #[arg(long)]
    key: PathBuf,
    /// The log the checkpoint must name on its origin line (default: the key's name).
    #[arg(long)]
    origin: Option<String>,
}

/// Exit 0 valid, 1 invalid (with the reason); 2 when a file cannot be read or parsed.
/// Uses no database and no configuration.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let key = std::fs::read_to_string(&args.key)
        .with_context(|| format!("reading {}", args.key.display()))?;
    let key = NoteVerifier::parse(&key).context("the verifier key")?;
    let text = if args.file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("reading standard input")?
    } else {
        std::fs::read_to_string(&args.file)
            .with_context(|| format!("reading {}", args.file.display()))?
    };
    match ledger_actors::tlog::verify_receipt_text(&text, &key, args.origin.as_deref()) {
        Ok((receipt, v)) => {
            println!(
                "valid: record {} (hash {}) is leaf {} of {} in log {:?}",
                receipt.record["rid"].as_str().unwrap_or("?"),
                v.record_hash,
                v.leaf_index,
                v.checkpoint.size,
                v.checkpoint.origin
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            println!("invalid: {e}");
            Ok(ExitCode::from(1))
        }
    }
}
