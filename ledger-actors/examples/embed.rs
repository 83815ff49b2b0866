//! Embedding the ledger in a host application (the README shows this file).
use ledger_actors::{Ledger, LedgerConfig, LedgerError, RecordRange};
use ledger_entities::NewRecord;
use serde_json::json;
use uuid::Uuid;

#[actix::main]
async fn main() -> Result<(), LedgerError> {
    // The YAML file named by LEDGER_CONFIG (if any), then LEDGER_* variables; memory by default.
    let ledger = Ledger::start(LedgerConfig::load(None)?).await?;
    let order = Uuid::new_v4(); // an anchor: one hash-linked chain
    for (i, event) in ["created", "paid", "shipped"].into_iter().enumerate() {
        let record = NewRecord::new(order, "orders", event, json!({ "step": i }), "shop");
        let ack = ledger.append(record).await?;
        println!(
            "{} {} durability={:?}",
            ack.record.kind, ack.record.hash, ack.durability
        );
    }
    let chain = ledger.records(order, &RecordRange::default()).await?;
    assert_eq!(chain[1].prev_hash, Some(chain[0].hash));
    assert!(ledger.verify(order).await?.is_intact());
    ledger.shutdown().await?;
    Ok(())
}
