//! `ledger get RID [--json]`: one record.

use std::process::ExitCode;

use std::sync::Arc;

use ledger_actors::transfer::format;
use ledger_actors::{LedgerConfig, LedgerStore};
use ledger_entities::LedgerRecord;
use uuid::Uuid;

/// Arguments of `ledger get`.
#[derive(clap::Args)]
pub struct Args {
    /// The record id.
    rid: Uuid,
    /// Print the record as one JSON object (the export's record line).
    #[arg(long)]
    json: bool,
}

/// Runs `ledger get`: exit 0 found, 1 no such record, 2 the store cannot be read.
pub async fn run(config: LedgerConfig, args: Args) -> anyhow::Result<ExitCode> {
    crate::read::with_store(&config, |store| show(store, args)).await
}

async fn show(store: Arc<dyn LedgerStore>, args: Args) -> anyhow::Result<ExitCode> {
    let Some(record) = store.get(args.rid).await? else {
        eprintln!("ledger: no record with rid {}", args.rid);
        return Ok(ExitCode::from(1));
    };
    if args.json {
        print!("{}", json_line(&record)?);
    } else {
        print!("{}", describe(&record));
    }
    Ok(ExitCode::SUCCESS)
}

/// The record as the export writes it: one JSON object and a newline.
pub fn json_line(record: &LedgerRecord) -> anyhow::Result<String> {
    let mut buf = Vec::new();
    format::write_record(&mut buf, record)?;
    Ok(String::from_utf8(buf)?)
}

/// The record as `field value` lines.
fn describe(r: &LedgerRecord) -> String {
    use base64::Engine as _;
    let sig = r.sig.as_ref().map_or_else(
        || "(none)".to_owned(),
        |s| base64::engine::general_purpose::STANDARD.encode(s),
    );
    format!(
        "rid        {}\nanchor_id  {}\nslot       {}\nkind       {}\nts         {}\nprev_hash  {}\nhash       {}\nproducer   {}\nversion    {}\nsig        {sig}\npayload    {}\n",
        r.rid,
        r.anchor_id,
        r.slot,
        r.kind,
        format::format_ts(r.ts),
        r.prev_hash
            .map_or_else(|| "(none: genesis)".to_owned(), |h| h.to_hex()),
        r.hash,
        r.producer,
        r.version,
        r.payload
    )
}
