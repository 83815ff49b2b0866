//! `ledger verify-receipt`: checks a receipt offline, with only the verifier key (and the
//! witnesses' keys, for the cosignatures).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use ledger_tlog::cosig::CosignatureVerifier;
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
    /// A witness's cosignature/v1 verifier key file (repeatable): the checkpoint must carry
    /// valid cosignatures by these witnesses.
    #[arg(long = "witness", value_name = "W.pub")]
    witnesses: Vec<PathBuf>,
    /// How many of the `--witness` keys must have cosigned (default: all of them).
    #[arg(long, requires = "witnesses")]
    quorum: Option<usize>,
}

/// Exit 0 valid, 1 invalid (with the reason); 2 when a file cannot be read or parsed.
/// Uses no database and no configuration.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let key = std::fs::read_to_string(&args.key)
        .with_context(|| format!("reading {}", args.key.display()))?;
    let key = NoteVerifier::parse(&key).context("the verifier key")?;
    let mut witnesses = Vec::with_capacity(args.witnesses.len());
    for path in &args.witnesses {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        witnesses.push(
            CosignatureVerifier::parse(&text)
                .with_context(|| format!("the witness key {}", path.display()))?,
        );
    }
    let quorum = args.quorum.unwrap_or(witnesses.len());
    if quorum > witnesses.len() {
        anyhow::bail!(
            "--quorum {quorum} is more than the {} --witness key(s) given",
            witnesses.len()
        );
    }
    let text = if args.file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("reading standard input")?
    } else {
        std::fs::read_to_string(&args.file)
            .with_context(|| format!("reading {}", args.file.display()))?
    };
    let verified = ledger_actors::tlog::verify_receipt_text(&text, &key, args.origin.as_deref())
        .and_then(|(receipt, v)| {
            let cosigned =
                ledger_tlog::cosig::check_quorum(&receipt.checkpoint, &witnesses, quorum)?;
            Ok((receipt, v, cosigned))
        });
    match verified {
        Ok((receipt, v, cosigned)) => {
            println!(
                "valid: record {} (hash {}) is leaf {} of {} in log {:?}",
                receipt.record["rid"].as_str().unwrap_or("?"),
                v.record_hash,
                v.leaf_index,
                v.checkpoint.size,
                v.checkpoint.origin
            );
            if !witnesses.is_empty() {
                println!(
                    "witnessed: {cosigned} of {} witness(es) cosigned it (quorum {quorum})",
                    witnesses.len()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            println!("invalid: {e}");
            Ok(ExitCode::from(1))
        }
    }
}
