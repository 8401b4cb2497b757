//! What the broker's own store says about a record the audit found twice: the batch that holds it (producer id
//! and epoch), how that producer's transaction there ended (its next control record in the partition, COMMIT or
//! ABORT), and which transactional id the producer id was given to (the transaction log). Read with Kafka's
//! `DumpLogSegments` from the store of a `scripts/kafka-dev.sh` broker, so that a duplicate is explained by the
//! broker's evidence, not by the maker's account of itself.

use std::cell::{OnceCell, RefCell};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The store of a `scripts/kafka-dev.sh` broker or cluster, read through its `tool` command. Each partition and
/// the transaction log are dumped once (a dump starts a JVM).
pub struct Store {
    script: PathBuf,
    kafka_dev_dir: PathBuf,
    batches: RefCell<HashMap<(String, i32), Vec<Batch>>>,
    transactional_ids: OnceCell<Vec<(i64, String)>>,
}

/// One batch of a partition as `DumpLogSegments` prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Batch {
    base_offset: i64,
    last_offset: i64,
    producer_id: i64,
    producer_epoch: i64,
    transactional: bool,
    control: bool,
    create_time: String,
    /// For a control batch: `COMMIT` or `ABORT`.
    marker: Option<String>,
}

impl Store {
    pub fn new(script: &Path, kafka_dev_dir: &Path) -> Self {
        Self {
            script: script.to_path_buf(),
            kafka_dev_dir: kafka_dev_dir.to_path_buf(),
            batches: RefCell::default(),
            transactional_ids: OnceCell::new(),
        }
    }

    /// The data directories of the store's nodes (one for a single node, `node-N/data` for a cluster).
    fn data_dirs(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(&self.kafka_dev_dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("node-"))
            })
            .map(|p| p.join("data"))
            .collect();
        dirs.sort();
        dirs.insert(0, self.kafka_dev_dir.join("data"));
        dirs.retain(|d| d.is_dir());
        dirs
    }

    /// The segment files of `dir` (a partition's directory), in offset order.
    fn segments(dir: &Path) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "log"))
            .collect();
        files.sort();
        files
    }

    fn dump(&self, files: &[PathBuf], options: &[&str]) -> Result<String, String> {
        let files = files
            .iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
            .join(",");
        let output = Command::new(&self.script)
            .args([
                "tool",
                "org.apache.kafka.tools.DumpLogSegments",
                "--files",
                &files,
            ])
            .args(options)
            .env("KAFKA_DEV_DIR", &self.kafka_dev_dir)
            .output()
            .map_err(|e| format!("running {}: {e}", self.script.display()))?;
        if !output.status.success() {
            return Err(format!(
                "DumpLogSegments failed: {}",
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// The batches of `topic`-`partition` as the first node holding it stores them.
    fn batches(&self, topic: &str, partition: i32) -> Result<Vec<Batch>, String> {
        let name = format!("{topic}-{partition}");
        let dir = self
            .data_dirs()
            .into_iter()
            .map(|d| d.join(&name))
            .find(|d| d.is_dir())
            .ok_or_else(|| format!("no node of {} holds {name}", self.kafka_dev_dir.display()))?;
        let dump = self.dump(&Self::segments(&dir), &["--print-data-log"])?;
        Ok(parse_batches(&dump))
    }

    /// Which transactional id each producer id was given to, from the transaction log of every node.
    fn transactional_ids(&self) -> Result<Vec<(i64, String)>, String> {
        let mut files = Vec::new();
        for dir in self.data_dirs() {
            for partition in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                if partition
                    .file_name()
                    .to_string_lossy()
                    .starts_with("__transaction_state-")
                {
                    files.extend(Self::segments(&partition.path()));
                }
            }
        }
        if files.is_empty() {
            return Ok(Vec::new());
        }
        let dump = self.dump(&files, &["--transaction-log-decoder"])?;
        let mut ids: Vec<(i64, String)> = dump
            .lines()
            .filter_map(|line| {
                let id = value_after(line, &["transactionalId=", "\"transactionalId\":\""])?;
                let producer = value_after(line, &["producerId:", "\"producerId\":"])?;
                Some((producer.parse().ok()?, id.to_string()))
            })
            .collect();
        ids.sort();
        ids.dedup();
        Ok(ids)
    }

    /// Traces the record at `offset` of `topic`-`partition`: the batch holding it, how its transaction ended and
    /// whose transactional id its producer had.
    pub fn trace(&self, topic: &str, partition: i32, offset: i64) -> Result<Trace, String> {
        let key = (topic.to_string(), partition);
        if !self.batches.borrow().contains_key(&key) {
            let batches = self.batches(topic, partition)?;
            self.batches.borrow_mut().insert(key.clone(), batches);
        }
        if self.transactional_ids.get().is_none() {
            let ids = self.transactional_ids()?;
            let _ = self.transactional_ids.set(ids);
        }
        let ids = self.transactional_ids.get().map_or(&[][..], Vec::as_slice);
        let (text, transactional_ids) = describe(&self.batches.borrow()[&key], ids, offset);
        Ok(Trace {
            text: format!("{topic}-{partition} offset {offset}: {text}"),
            transactional_ids,
        })
    }
}

/// A record traced in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trace {
    /// One line: the record's batch, producer, transactional id and the marker that ended its transaction.
    pub text: String,
    /// The transactional ids the record's producer id was given to (one, unless the log was compacted away).
    pub transactional_ids: Vec<String>,
}

fn describe(batches: &[Batch], ids: &[(i64, String)], offset: i64) -> (String, Vec<String>) {
    let Some((at, batch)) = batches
        .iter()
        .enumerate()
        .find(|(_, b)| b.base_offset <= offset && offset <= b.last_offset)
    else {
        return ("no batch holds it".into(), Vec::new());
    };
    let owner: Vec<String> = ids
        .iter()
        .filter(|(p, _)| *p == batch.producer_id)
        .map(|(_, id)| id.clone())
        .collect();
    let ended = batches[at + 1..]
        .iter()
        .find(|b| b.control && b.producer_id == batch.producer_id)
        .map_or("no marker after it".to_string(), |end| {
            format!(
                "{} at offset {} (epoch {}, {})",
                end.marker.as_deref().unwrap_or("a marker"),
                end.base_offset,
                end.producer_epoch,
                end.create_time
            )
        });
    let text = format!(
        "batch {}..{} of producer {} epoch {} (transactional id {}), transactional {}, {}; ended by {ended}",
        batch.base_offset,
        batch.last_offset,
        batch.producer_id,
        batch.producer_epoch,
        if owner.is_empty() { "unknown".into() } else { owner.join(" or ") },
        batch.transactional,
        batch.create_time,
    );
    (text, owner)
}

/// The text after the first of `keys` in `line`, up to a delimiter.
fn value_after<'a>(line: &'a str, keys: &[&str]) -> Option<&'a str> {
    keys.iter().find_map(|key| {
        let start = line.find(key)? + key.len();
        let rest = &line[start..];
        let end = rest
            .find(|c: char| c == ',' || c == '"' || c == '}' || c.is_whitespace())
            .unwrap_or(rest.len());
        Some(&rest[..end])
    })
}

/// The batches of a `DumpLogSegments --print-data-log` output, with the marker of each control batch.
fn parse_batches(dump: &str) -> Vec<Batch> {
    let mut batches: Vec<Batch> = Vec::new();
    for line in dump.lines() {
        if line.starts_with("baseOffset:") {
            let number = |key: &str| {
                value_after(line, &[key])
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(-1)
            };
            batches.push(Batch {
                base_offset: number("baseOffset: "),
                last_offset: number("lastOffset: "),
                producer_id: number("producerId: "),
                producer_epoch: number("producerEpoch: "),
                transactional: value_after(line, &["isTransactional: "]) == Some("true"),
                control: value_after(line, &["isControl: "]) == Some("true"),
                create_time: format!(
                    "CreateTime {}",
                    value_after(line, &["CreateTime: "]).unwrap_or("?")
                ),
                marker: None,
            });
        } else if let (Some(marker), Some(batch)) =
            (value_after(line, &["endTxnMarker: "]), batches.last_mut())
        {
            batch.marker = Some(marker.to_string());
        }
    }
    batches
}

#[cfg(test)]
mod tests {
    use super::*;

    const DUMP: &str = "\
Dumping /x/00000000000000000000.log
Log starting offset: 0
baseOffset: 0 lastOffset: 2 count: 3 baseSequence: 0 lastSequence: 2 producerId: 7 producerEpoch: 0 partitionLeaderEpoch: 0 isTransactional: true isControl: false deleteHorizonMs: OptionalLong.empty position: 0 CreateTime: 100 size: 200 magic: 2 compresscodec: none crc: 1 isvalid: true
| offset: 0 CreateTime: 100 keySize: 1 valueSize: 2 sequence: 0 headerKeys: [] key: a payload: {}
baseOffset: 3 lastOffset: 3 count: 1 baseSequence: -1 lastSequence: -1 producerId: 9 producerEpoch: 1 partitionLeaderEpoch: 0 isTransactional: true isControl: false deleteHorizonMs: OptionalLong.empty position: 200 CreateTime: 101 size: 90 magic: 2 compresscodec: none crc: 2 isvalid: true
baseOffset: 4 lastOffset: 4 count: 1 baseSequence: -1 lastSequence: -1 producerId: 7 producerEpoch: 0 partitionLeaderEpoch: 0 isTransactional: true isControl: true deleteHorizonMs: OptionalLong.empty position: 290 CreateTime: 102 size: 78 magic: 2 compresscodec: none crc: 3 isvalid: true
| offset: 4 CreateTime: 102 keySize: 4 valueSize: 6 sequence: -1 headerKeys: [] endTxnMarker: COMMIT coordinatorEpoch: 3
";

    #[test]
    fn a_record_is_traced_to_its_producer_and_the_marker_that_ended_its_transaction() {
        let batches = parse_batches(DUMP);
        assert_eq!(batches.len(), 3);
        assert_eq!(batches[2].marker.as_deref(), Some("COMMIT"));
        let ids = vec![(7, "maker-a.1f".to_string())];
        let (line, owners) = describe(&batches, &ids, 1);
        assert_eq!(owners, ["maker-a.1f"]);
        assert!(
            line.contains("batch 0..2 of producer 7 epoch 0 (transactional id maker-a.1f)"),
            "{line}"
        );
        assert!(line.contains("ended by COMMIT at offset 4"), "{line}");
        let (open, _) = describe(&batches, &ids, 3);
        assert!(open.contains("transactional id unknown"), "{open}");
        assert!(open.contains("no marker after it"), "{open}");
        assert_eq!(describe(&batches, &ids, 5).0, "no batch holds it");
    }

    #[test]
    fn transactional_ids_are_read_from_either_format_of_the_decoder() {
        let old = "| offset: 0 key: transaction_metadata::transactionalId=maker-a.1f payload: producerId:7,producerEpoch:0";
        let json = r#"| offset: 1 key: {"type":"0","data":{"transactionalId":"maker-b.2e"}} payload: {"version":"1","data":{"producerId":9,"producerEpoch":1}}"#;
        assert_eq!(
            value_after(old, &["transactionalId=", "\"transactionalId\":\""]),
            Some("maker-a.1f")
        );
        assert_eq!(
            value_after(old, &["producerId:", "\"producerId\":"]),
            Some("7")
        );
        assert_eq!(
            value_after(json, &["transactionalId=", "\"transactionalId\":\""]),
            Some("maker-b.2e")
        );
        assert_eq!(
            value_after(json, &["producerId:", "\"producerId\":"]),
            Some("9")
        );
    }
}
