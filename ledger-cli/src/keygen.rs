//! `ledger keygen`: a checkpoint signing key pair in the C2SP signed-note formats.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use ledger_tlog::note::NoteSigner;

/// Arguments of `ledger keygen`.
#[derive(clap::Args)]
pub struct Args {
    /// The log's origin (checkpoint first line and key name), e.g. `example.com/avl/prod`.
    #[arg(long)]
    origin: String,
    /// Directory for `checkpoint.key` (signer, mode 0600) and `checkpoint.pub` (verifier).
    #[arg(long)]
    out: PathBuf,
}

/// Writes the key pair; refuses to overwrite an existing key. Prints the verifier key.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let signer = NoteSigner::from_seed(&args.origin, &rand::random::<[u8; 32]>())?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let key_path = args.out.join("checkpoint.key");
    let pub_path = args.out.join("checkpoint.pub");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&key_path).with_context(|| {
        format!(
            "creating {} (an existing key is never overwritten)",
            key_path.display()
        )
    })?;
    file.write_all(signer.to_key_string().as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    let verifier = signer.verifier().to_key_string();
    std::fs::write(&pub_path, format!("{verifier}\n"))
        .with_context(|| format!("writing {}", pub_path.display()))?;
    println!("{verifier}");
    eprintln!(
        "signer key: {} (keep it secret; set checkpoint_key / LEDGER_CHECKPOINT_KEY to it)\nverifier key: {} (publish it)",
        key_path.display(),
        pub_path.display()
    );
    Ok(ExitCode::SUCCESS)
}
