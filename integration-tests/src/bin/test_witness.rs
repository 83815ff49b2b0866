//! `avl-test-witness`: a C2SP tlog-witness for tests and benchmarks (state in memory).
//!
//! ```text
//! avl-test-witness --listen 127.0.0.1:7380 --key witness.key --name witness.example/w1 \
//!     --log-key checkpoint.pub [--log-key other.pub]...
//! ```
//!
//! `--key`: the cosigner key file; when it does not exist, a new key named `--name` is
//! written there (mode 0600) with its verifier key beside it (`<key>.pub`). Prints
//! `listening <addr>` and the verifier key, then serves until killed.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::{Context as _, bail};
use ledger_tlog::cosig::CosignatureSigner;
use ledger_tlog::note::NoteVerifier;
use ledger_tlog::witness::Witness;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut listen = "127.0.0.1:0".to_owned();
    let mut key: Option<PathBuf> = None;
    let mut name = "avl-test-witness".to_owned();
    let mut logs = Vec::new();
    while let Some(a) = args.next() {
        let mut value = || args.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--listen" => listen = value()?,
            "--key" => key = Some(PathBuf::from(value()?)),
            "--name" => name = value()?,
            "--log-key" => {
                let path = value()?;
                let text =
                    std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
                logs.push(NoteVerifier::parse(&text).with_context(|| format!("log key {path}"))?);
            }
            other => bail!("unknown argument {other}; see the file's doc comment"),
        }
    }
    let key = key.context("--key FILE is required")?;
    let signer = if key.exists() {
        CosignatureSigner::parse(&std::fs::read_to_string(&key)?).context("the cosigner key")?
    } else {
        let signer = CosignatureSigner::from_seed(&name, &rand::random::<[u8; 32]>())?;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut f = options
            .open(&key)
            .with_context(|| format!("creating {}", key.display()))?;
        f.write_all(signer.to_key_string().as_bytes())?;
        f.write_all(b"\n")?;
        let mut pub_path = key.as_os_str().to_owned();
        pub_path.push(".pub");
        std::fs::write(
            &pub_path,
            format!("{}\n", signer.verifier().to_key_string()),
        )?;
        signer
    };
    if logs.is_empty() {
        bail!("give at least one --log-key");
    }
    let vkey = signer.verifier().to_key_string();
    let running = integration_tests::witness::spawn(
        Witness::new(signer, logs),
        listen.parse().context("--listen ADDR")?,
    )?;
    println!("listening {}", running.addr);
    println!("{vkey}");
    std::io::stdout().flush()?;
    // Serves until the process is killed.
    loop {
        std::thread::park();
    }
}
