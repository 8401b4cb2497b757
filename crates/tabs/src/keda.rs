//! KEDA's decision, reproduced: the Kafka scaler's lag metric and the ScaledJob default scaling strategy. The
//! local mode starts makers by it, and a maker leaves by it when it is surplus (KEDA starts Jobs, never stops
//! one).
//!
//! - Kafka scaler (KEDA 2.20): per partition, lag = log end offset − committed offset (the whole log when the
//!   group has no committed offset and `offsetResetPolicy` is `earliest`); the metric is the total, capped at
//!   `lagThreshold` × partitions unless `allowIdleConsumers`; the trigger is active when the metric exceeds
//!   `activationLagThreshold`.
//! - ScaledJob `default` strategy: start min(ceil(metric / lagThreshold), maxReplicaCount) − running jobs.

/// The trigger and ScaledJob settings that decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScalerSettings {
    pub lag_threshold: u64,
    pub activation_lag_threshold: u64,
    pub max_replicas: u32,
    pub allow_idle_consumers: bool,
}

/// Lag of one partition as KEDA computes it: `committed` is `None` when the group has committed nothing there.
pub fn partition_lag(log_end: i64, committed: Option<i64>) -> u64 {
    let lag = match committed {
        Some(committed) => log_end - committed,
        // offsetResetPolicy: earliest: KEDA counts the whole log (the log end offset).
        None => log_end,
    };
    u64::try_from(lag).unwrap_or(0)
}

/// The scaler's metric: total lag, capped at one threshold per partition unless idle consumers are allowed.
pub fn scaler_metric(partition_lags: &[u64], settings: &ScalerSettings) -> u64 {
    let total: u64 = partition_lags.iter().sum();
    let partitions = partition_lags.len() as u64;
    let threshold = settings.lag_threshold.max(1);
    // KEDA compares with integer division: a cap, never more than one threshold per partition.
    if !settings.allow_idle_consumers && total / threshold > partitions {
        partitions * threshold
    } else {
        total
    }
}

/// The jobs the rule wants running for `metric`: min(ceil(metric / lagThreshold), maxReplicaCount), none while
/// the trigger is not active.
pub fn wanted(metric: u64, settings: &ScalerSettings) -> u32 {
    if metric <= settings.activation_lag_threshold {
        return 0;
    }
    let wanted = metric.div_ceil(settings.lag_threshold.max(1));
    u32::try_from(wanted)
        .unwrap_or(u32::MAX)
        .min(settings.max_replicas)
}

/// Jobs to start now, given the metric and the jobs still running.
pub fn jobs_to_start(metric: u64, running: u32, settings: &ScalerSettings) -> u32 {
    wanted(metric, settings).saturating_sub(running)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEDA: ScalerSettings = ScalerSettings {
        lag_threshold: 256,
        activation_lag_threshold: 0,
        max_replicas: 12,
        allow_idle_consumers: false,
    };

    #[test]
    fn partition_lag_counts_the_whole_log_without_a_committed_offset() {
        assert_eq!(partition_lag(100, Some(40)), 60);
        assert_eq!(partition_lag(100, None), 100);
        assert_eq!(partition_lag(100, Some(100)), 0);
        assert_eq!(partition_lag(5, Some(9)), 0, "never negative");
    }

    #[test]
    fn the_metric_is_capped_at_one_threshold_per_partition() {
        // (partition lags, allow idle consumers, expected metric)
        let cases: [(&[u64], bool, u64); 6] = [
            (&[0, 0, 0], false, 0),
            (&[10, 20, 30], false, 60),
            (&[256, 256, 256], false, 768),
            // 3 partitions: capped at 3 × 256 = 768 once total / threshold (integer division, as KEDA does)
            // exceeds the partition count, i.e. from 4 × 256 = 1024 on; below that the total stands.
            (&[1023, 0, 0], false, 1023),
            (&[1024, 0, 0], false, 768),
            (&[1024, 0, 0], true, 1024),
        ];
        for (lags, allow, expected) in cases {
            let settings = ScalerSettings {
                allow_idle_consumers: allow,
                ..KEDA
            };
            assert_eq!(
                scaler_metric(lags, &settings),
                expected,
                "{lags:?} allow={allow}"
            );
        }
    }

    #[test]
    fn jobs_follow_kedas_default_strategy() {
        // (metric, running, expected new jobs)
        let cases = [
            (0, 0, 0),       // no lag: nothing
            (1, 0, 1),       // any lag: one maker
            (256, 0, 1),     // exactly one maker's capacity
            (257, 0, 2),     // one more order: a second maker
            (600, 1, 2),     // ceil(600 / 256) = 3, one running
            (600, 3, 0),     // enough running
            (600, 5, 0),     // more than enough: never negative
            (10_000, 0, 12), // capped at maxReplicaCount
            (10_000, 11, 1),
        ];
        for (metric, running, expected) in cases {
            assert_eq!(
                jobs_to_start(metric, running, &KEDA),
                expected,
                "metric {metric}, running {running}"
            );
        }
    }

    #[test]
    fn activation_threshold_keeps_small_lags_at_zero() {
        let settings = ScalerSettings {
            activation_lag_threshold: 5,
            ..KEDA
        };
        assert_eq!(jobs_to_start(5, 0, &settings), 0);
        assert_eq!(jobs_to_start(6, 0, &settings), 1);
    }

    #[test]
    fn partition_cap_and_max_replicas_combine() {
        // 12 partitions all far behind: the metric is capped at 12 × 256, so 12 makers, not 40.
        let lags = [10_000u64; 12];
        let metric = scaler_metric(&lags, &KEDA);
        assert_eq!(metric, 12 * 256);
        assert_eq!(jobs_to_start(metric, 0, &KEDA), 12);
        let few = ScalerSettings {
            max_replicas: 4,
            ..KEDA
        };
        assert_eq!(jobs_to_start(metric, 0, &few), 4);
    }
}
