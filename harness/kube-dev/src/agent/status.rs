//! The pod status a kubelet reports, built from what the agent knows of its one container.

use k8s_openapi::api::core::v1::Pod;
use serde_json::{json, Value};

use super::process::Exit;

/// Where the container is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Not started: its configuration could not be prepared yet (a missing Secret, say).
    Waiting {
        reason: String,
        message: String,
    },
    Running {
        started_at: String,
        ready: bool,
    },
    Terminated {
        exit: Exit,
        started_at: String,
        finished_at: String,
    },
}

/// What a status patch says about the container.
#[derive(Debug, Clone)]
pub struct ContainerReport {
    pub name: String,
    pub image: String,
    pub pid: Option<i32>,
    pub state: State,
    pub restarts: u32,
    /// The previous run, after a restart.
    pub last: Option<State>,
}

/// The pod phase: `final_phase` is the phase once nothing will run again (the exit code decides).
pub fn phase(report: &ContainerReport, finished: bool) -> &'static str {
    match (&report.state, finished) {
        (State::Terminated { exit, .. }, true) if exit.code == 0 => "Succeeded",
        (State::Terminated { .. }, true) => "Failed",
        (State::Waiting { .. }, false) => "Pending",
        _ => "Running",
    }
}

fn state_json(state: &State, pid: Option<i32>) -> Value {
    match state {
        State::Waiting { reason, message } => {
            json!({"waiting": {"reason": reason, "message": message}})
        }
        State::Running { started_at, .. } => json!({"running": {"startedAt": started_at}}),
        State::Terminated {
            exit,
            started_at,
            finished_at,
        } => {
            let mut terminated = json!({
                "exitCode": exit.code,
                "reason": exit.reason(),
                "startedAt": started_at,
                "finishedAt": finished_at,
                "containerID": pid.map(|p| format!("agent://{p}")),
            });
            if let Some(signal) = exit.signal {
                terminated["signal"] = json!(signal);
            }
            json!({ "terminated": terminated })
        }
    }
}

/// The `status` of a merge patch for `pod`; `finished` when the container will not run again.
pub fn pod_status(pod: &Pod, report: &ContainerReport, finished: bool, now: &str) -> Value {
    let ready = matches!(report.state, State::Running { ready: true, .. });
    let started = matches!(report.state, State::Running { .. });
    let flag = |b: bool| if b { "True" } else { "False" };
    // A merge patch replaces the list: keep the scheduler's condition as it was.
    let scheduled = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "PodScheduled"))
        .map(|c| serde_json::to_value(c).unwrap_or_default())
        .unwrap_or_else(
            || json!({"type": "PodScheduled", "status": "True", "lastTransitionTime": now}),
        );
    let previous = |kind: &str| {
        pod.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == kind))
            .map(|c| (c.status.clone(), c.last_transition_time.clone()))
    };
    let condition = |kind: &str, status: bool, reason: Option<&str>| {
        let status = flag(status);
        // The transition time moves only when the status does.
        let since = match previous(kind) {
            Some((was, Some(at))) if was == status => {
                serde_json::to_value(at).unwrap_or(json!(now))
            }
            _ => json!(now),
        };
        let mut c = json!({"type": kind, "status": status, "lastTransitionTime": since});
        if let Some(reason) = reason {
            c["reason"] = json!(reason);
        }
        c
    };
    let not_ready_reason = (!ready).then_some(if finished {
        "PodCompleted"
    } else {
        "ContainersNotReady"
    });
    let mut container = json!({
        "name": report.name,
        "image": report.image,
        "imageID": format!("agent://{}", report.image),
        "ready": ready,
        "started": started,
        "restartCount": report.restarts,
        "state": state_json(&report.state, report.pid),
    });
    if let Some(pid) = report.pid {
        container["containerID"] = json!(format!("agent://{pid}"));
    }
    if let Some(last) = &report.last {
        container["lastState"] = state_json(last, None);
    }
    let start_time = pod
        .status
        .as_ref()
        .and_then(|s| s.start_time.clone())
        .map(|t| serde_json::to_value(t).unwrap_or(json!(now)))
        .unwrap_or(json!(now));
    json!({
        "phase": phase(report, finished),
        "hostIP": "127.0.0.1",
        "hostIPs": [{"ip": "127.0.0.1"}],
        "podIP": "127.0.0.1",
        "podIPs": [{"ip": "127.0.0.1"}],
        "startTime": start_time,
        "conditions": [
            scheduled,
            condition("PodReadyToStartContainers", !finished, None),
            condition("Initialized", true, None),
            condition("ContainersReady", ready, not_ready_reason),
            condition("Ready", ready, not_ready_reason),
        ],
        "containerStatuses": [container],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(state: State) -> ContainerReport {
        ContainerReport {
            name: "medicine".into(),
            image: "medicine-pubsub/medicine:dev".into(),
            pid: Some(42),
            state,
            restarts: 0,
            last: None,
        }
    }

    #[test]
    fn a_finished_container_decides_the_phase_by_its_exit_code() {
        let terminated = |code| State::Terminated {
            exit: Exit { code, signal: None },
            started_at: "a".into(),
            finished_at: "b".into(),
        };
        assert_eq!(phase(&report(terminated(0)), true), "Succeeded");
        assert_eq!(phase(&report(terminated(1)), true), "Failed");
        assert_eq!(
            phase(&report(terminated(1)), false),
            "Running",
            "about to restart"
        );
    }

    #[test]
    fn readiness_shows_in_the_conditions_and_the_exit_code_in_the_state() {
        let pod = Pod::default();
        let running = State::Running {
            started_at: "t0".into(),
            ready: true,
        };
        let status = pod_status(&pod, &report(running), false, "t1");
        assert_eq!(status["phase"], "Running");
        assert_eq!(status["conditions"][4]["type"], "Ready");
        assert_eq!(status["conditions"][4]["status"], "True");
        assert_eq!(status["containerStatuses"][0]["ready"], true);

        let killed = State::Terminated {
            exit: Exit {
                code: 143,
                signal: Some(15),
            },
            started_at: "t0".into(),
            finished_at: "t2".into(),
        };
        let status = pod_status(&pod, &report(killed), true, "t2");
        assert_eq!(status["phase"], "Failed");
        let terminated = &status["containerStatuses"][0]["state"]["terminated"];
        assert_eq!(terminated["exitCode"], 143);
        assert_eq!(terminated["signal"], 15);
        assert_eq!(status["conditions"][4]["reason"], "PodCompleted");
    }
}
