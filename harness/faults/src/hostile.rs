//! Bad input among valid orders: a flood of random and mutated records, and records at the broker's size limit
//! whose dead letters once did not fit.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};
use rand::seq::IndexedRandom as _;
use tabs::messages::{parse_order, to_json, DeadLetter, Order};

use crate::{
    findings, liveness_bound, stop_patients, wind_down, Crew, Ending, Findings, Harness, Topics,
};

/// A bad record: random bytes, or a valid order mutated.
fn hostile_record(rng: &mut impl rand::Rng, order: &Order) -> Vec<u8> {
    let template = to_json(order);
    match rng.random_range(0..6) {
        // Random bytes, often not UTF-8.
        0 => (0..rng.random_range(0..64)).map(|_| rng.random()).collect(),
        // Truncated JSON.
        1 => template[..rng.random_range(0..template.len())].to_vec(),
        // A flipped byte somewhere.
        2 => {
            let mut bytes = template.to_vec();
            let at = rng.random_range(0..bytes.len());
            bytes[at] ^= 1 << rng.random_range(0..8);
            bytes
        }
        // A field replaced by a value of another type or out of range.
        3 => {
            let field = ["patient_id", "order_timestamp_ns", "tabs_count"]
                .choose(rng)
                .copied()
                .unwrap_or("tabs_count");
            let value = [
                "null",
                "\"x\"",
                "-1",
                "0",
                "1e12",
                "[]",
                "{}",
                "1000000000000",
                "2.5",
                "true",
            ]
            .choose(rng)
            .copied()
            .unwrap_or("null");
            format!(
                r#"{{"patient_id":"{}","order_timestamp_ns":{},"tabs_count":1,"{field}":{value}}}"#,
                order.patient_id, order.order_timestamp_ns
            )
            .into_bytes()
        }
        // JSON that is not an object, or empty.
        4 => ["[]", "42", "\"order\"", "null", ""]
            .choose(rng)
            .copied()
            .unwrap_or("")
            .as_bytes()
            .to_vec(),
        // A very long patient id.
        _ => format!(
            r#"{{"patient_id":"{}","order_timestamp_ns":1,"tabs_count":1}}"#,
            "x".repeat(rng.random_range(257..2_000))
        )
        .into_bytes(),
    }
}

/// `records` bad records, each from its own order (patient id from `flood_id`, timestamps from `base`).
///
/// Some mutations are still valid orders (a flipped digit), and none may take the identity of another order:
/// the index is written twice in the patient id, so a mutation changes at most one copy, and an id whose copies
/// differ is that record's alone. With the index once, record i's id flipped into record j's, and record j's
/// timestamp flipped into record i's, made the same order twice (seen once in 100,000 records).
fn flood_records(
    rng: &mut impl rand::Rng,
    flood_id: &str,
    base: u64,
    records: usize,
) -> Vec<Vec<u8>> {
    (0..records)
        .map(|i| {
            let order = Order {
                patient_id: format!("{flood_id}-{i}-{i}"),
                order_timestamp_ns: base + i as u64,
                tabs_count: 5,
            };
            hostile_record(rng, &order)
        })
        .collect()
}

/// A flood of random and mutated records into the orders topic while valid orders keep coming. Nothing may
/// crash; every bad record must be in the DLQ with a reason; every good order must be made exactly once.
pub async fn hostile_flood(harness: &Harness, records: usize) -> anyhow::Result<Findings> {
    let started = Instant::now();
    let topics = Topics::create(&harness.bootstrap).await;
    let watch = harness.watch(&topics)?;
    let mut crew = Crew::default();
    crew.add(harness.maker(
        &topics,
        &[
            "--tab-making-time",
            "0",
            "--max-in-flight-orders",
            "256",
            "--idle-exit-after",
            "0",
        ],
    ));
    let mut patients = harness.patients(&topics, 20, "100ms");

    let flood = flood_records(
        &mut rand::rng(),
        &testkit::unique("flood"),
        tabs::time::now_ns(),
        records,
    );
    let bad = flood_into(harness, &topics, &flood).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop_patients(&mut patients).await?;

    let letters = testkit::read_topic(
        &harness.bootstrap,
        &topics.dlq,
        true,
        usize::try_from(bad)?,
        Duration::from_secs(2),
        Duration::from_secs(180),
    )
    .await;
    let ending = Ending {
        scenario: "hostile input flood".to_owned(),
        started,
        making_time: Duration::ZERO,
        wait: Duration::from_secs(60),
        bound: liveness_bound(Duration::ZERO, Duration::ZERO),
    };
    let (outcome, samples) = wind_down(harness, &topics, &mut crew, watch, &ending).await?;
    let mut result = findings(
        ending.scenario.clone(),
        started,
        &outcome,
        &samples,
        &crew,
        &[],
        ending.bound,
    )?;

    every_bad_record_has_its_dead_letter(&letters, bad)?;
    result.faults_injected = records as u64;
    result.dead_letters = letters.len() as u64;
    result.notes.push(format!(
        "{} of the {records} flooded records were still valid orders",
        records as u64 - bad
    ));
    Ok(result)
}

/// Writes `flood` to the orders topic (empty values as records without a value) and returns how many of them are
/// not valid orders: the validator decides (a flipped byte in an id, say, can leave a valid order).
async fn flood_into(harness: &Harness, topics: &Topics, flood: &[Vec<u8>]) -> u64 {
    let bad = flood
        .iter()
        .filter(|r| parse_order(Some(r.as_slice()), 30).is_err())
        .count() as u64;
    let keyed: Vec<testkit::RawRecord<'_>> = flood
        .iter()
        .map(|value| (None, (!value.is_empty()).then_some(value.as_slice())))
        .collect();
    testkit::produce_many(&harness.bootstrap, &topics.orders, &keyed).await;
    bad
}

/// One dead letter per bad record, each with its reason and error.
fn every_bad_record_has_its_dead_letter(
    letters: &[testkit::Record],
    bad: u64,
) -> anyhow::Result<()> {
    let mut without_reason = 0;
    for letter in letters {
        let letter: DeadLetter =
            serde_json::from_slice(letter.value.as_deref().unwrap_or_default())
                .context("a DLQ record that is not a dead letter")?;
        if letter.reason.is_empty() || letter.error.is_empty() {
            without_reason += 1;
        }
    }
    if letters.len() as u64 != bad {
        bail!(
            "{bad} bad records were sent, {} dead letters arrived",
            letters.len()
        );
    }
    ensure!(
        without_reason == 0,
        "{without_reason} dead letters without a reason"
    );
    Ok(())
}

/// Records at and above the sizes whose dead letters once outgrew what the broker accepts (binary 760,000 B,
/// quote-heavy text 510,000 B, plain ASCII 999,898 B, as base64 and escaped text grow them), sent among the
/// patients' orders every half second. Every one must reach the DLQ, no maker may fail, and every partition must
/// keep moving.
pub async fn oversized_records(harness: &Harness, rounds: usize) -> anyhow::Result<Findings> {
    let started = Instant::now();
    let topics = Topics::create(&harness.bootstrap).await;
    let making_time = Duration::from_millis(200);
    let watch = harness.watch(&topics)?;
    let mut crew = Crew::default();
    for _ in 0..2 {
        crew.add(harness.maker(
            &topics,
            &["--tab-making-time", "200ms", "--idle-exit-after", "0"],
        ));
    }
    let mut patients = harness.patients(&topics, 20, "200ms");
    let binary = |n: usize| -> Vec<u8> { (0..n).map(|i| (i % 200) as u8 | 0x80).collect() };
    let quotes = |n: usize| -> Vec<u8> { "\"\\".repeat(n / 2).into_bytes() };
    let records = [
        binary(760_000),
        binary(990_000),
        quotes(510_000),
        quotes(990_000),
        "a".repeat(999_898).into_bytes(),
    ];
    let mut sent = 0u64;
    for round in 0..rounds {
        let key = format!("oversized-{round}");
        let keyed: Vec<testkit::RawRecord<'_>> = records
            .iter()
            .map(|r| (Some(key.as_bytes()), Some(r.as_slice())))
            .collect();
        testkit::produce(&harness.bootstrap, &topics.orders, &keyed).await;
        sent += records.len() as u64;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    stop_patients(&mut patients).await?;
    let ending = Ending {
        scenario: "records at the broker's size limit".to_owned(),
        started,
        making_time,
        wait: Duration::from_secs(60),
        bound: liveness_bound(making_time, Duration::ZERO),
    };
    let (outcome, samples) = wind_down(harness, &topics, &mut crew, watch, &ending).await?;
    let mut result = findings(
        ending.scenario.clone(),
        started,
        &outcome,
        &samples,
        &crew,
        &[],
        ending.bound,
    )?;
    ensure!(
        outcome.invalid_orders == sent,
        "{sent} oversized records sent, {} seen as invalid",
        outcome.invalid_orders
    );
    result.faults_injected = sent;
    result.dead_letters = outcome.dead_lettered;
    Ok(result)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// The flood's valid mutations must each keep an identity of their own: two records with one identity are one
    /// order ordered twice, which the audit counts as duplicated tabs. A flipped digit in one record's patient id
    /// and another in a second record's timestamp once gave two records the same order.
    #[test]
    fn no_two_valid_records_of_a_flood_are_the_same_order() {
        let mut rng = rand::rng();
        for _ in 0..3 {
            let flood = flood_records(&mut rng, "flood-test", 1_000_000_000, 200_000);
            let mut seen: HashMap<(String, u64), &[u8]> = HashMap::new();
            for record in &flood {
                if let Ok(order) = parse_order(Some(record), 30) {
                    let identity = (order.patient_id, order.order_timestamp_ns);
                    if let Some(earlier) = seen.insert(identity.clone(), record) {
                        panic!(
                            "{identity:?} twice: {} and {}",
                            String::from_utf8_lossy(earlier),
                            String::from_utf8_lossy(record)
                        );
                    }
                }
            }
        }
    }
}
