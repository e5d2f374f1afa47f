//! Turning a Job and its pods into what the decision core needs (pure).

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ContainerStateTerminated, Event, Pod};
use kube::ResourceExt;

use super::decide::{Blocked, JobObservation, JobState};

/// Waiting reasons of a container that will not start unless something changes: the
/// image cannot be pulled, or the container cannot be made from the pod's spec. The
/// kubelet keeps retrying them, so without a look they last until the Job's deadline.
const CANNOT_START: &[&str] = &[
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
];

/// Why the newest pod of a running Job does not start, if it does not: a container
/// waiting for a reason in [`CANNOT_START`], or a pod the scheduler cannot place.
fn not_starting(pods: &[Pod]) -> Option<Blocked> {
    let pod = pods.iter().max_by_key(|p| p.creation_timestamp())?;
    let status = pod.status.as_ref()?;
    let waiting = status.container_statuses.iter().flatten().find_map(|c| c.state.as_ref()?.waiting.as_ref());
    if let Some(w) = waiting
        && let Some(reason) = w.reason.as_deref().filter(|r| CANNOT_START.contains(r))
    {
        let message = w.message.clone().unwrap_or_default();
        return Some(Blocked { reason: reason.to_string(), message: format!("pod {}: {message}", pod.name_any()) });
    }
    let unschedulable =
        status.conditions.iter().flatten().find(|c| {
            c.type_ == "PodScheduled" && c.status == "False" && c.reason.as_deref() == Some("Unschedulable")
        })?;
    let message = unschedulable.message.clone().unwrap_or_default();
    Some(Blocked { reason: "Unschedulable".into(), message: format!("pod {}: {message}", pod.name_any()) })
}

/// Why the Job controller could not create the Job's pod, from its `FailedCreate`
/// events (newest first wins): refused by Pod Security admission, by a quota, by a
/// webhook. Nothing else records it: the Job keeps no condition for it.
pub fn refused_creation(events: &[Event]) -> Option<Blocked> {
    let event = events
        .iter()
        .filter(|e| e.reason.as_deref() == Some("FailedCreate"))
        .max_by_key(|e| e.last_timestamp.as_ref().map(|t| t.0).or(e.event_time.as_ref().map(|t| t.0)))?;
    let message = event.message.clone().unwrap_or_default();
    let reason = if message.contains("violates PodSecurity") { "PodSecurityRefused" } else { "PodCreateFailed" };
    Some(Blocked { reason: reason.into(), message })
}

fn job_condition<'a>(job: &'a Job, type_: &str) -> Option<&'a k8s_openapi::api::batch::v1::JobCondition> {
    job.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == type_ && c.status == "True")
}

/// The terminated state of the step container of the newest pod that terminated.
fn terminated(pods: &[Pod]) -> Option<&ContainerStateTerminated> {
    let mut pods: Vec<&Pod> = pods.iter().collect();
    pods.sort_by_key(|p| std::cmp::Reverse(p.creation_timestamp()));
    pods.into_iter().find_map(|p| {
        p.status.as_ref()?.container_statuses.as_ref()?.iter().find_map(|c| c.state.as_ref()?.terminated.as_ref())
    })
}

/// What a Job says about its step, given its pods (the termination message of a finished
/// one, or why a running one's pod does not start).
pub fn observe_job(job: &Job, pods: &[Pod]) -> JobObservation {
    let complete = job_condition(job, "Complete");
    let failed = job_condition(job, "Failed");
    let state = match (complete, failed) {
        (Some(_), _) => JobState::Succeeded,
        (None, Some(_)) => JobState::Failed,
        (None, None) => JobState::Running,
    };
    let status = job.status.as_ref();
    let term = terminated(pods);
    let finished_at =
        status.and_then(|s| s.completion_time.clone()).or_else(|| failed.and_then(|c| c.last_transition_time.clone()));
    let (reason, message) = match (failed, term) {
        // A Job stopped by its deadline says so better than the killed container.
        (Some(c), _) if c.reason.as_deref() == Some("DeadlineExceeded") => (c.reason.clone(), c.message.clone()),
        (_, Some(t)) => (t.reason.clone(), t.message.clone()),
        (Some(c), None) => (c.reason.clone(), c.message.clone()),
        (None, None) => (None, None),
    };
    JobObservation {
        name: job.name_any(),
        state,
        started_at: status.and_then(|s| s.start_time.clone()),
        finished_at: if state == JobState::Running { None } else { finished_at },
        reason,
        message,
        exit_code: term.map(|t| t.exit_code),
        has_pod: !pods.is_empty(),
        blocked: if state == JobState::Running { not_starting(pods) } else { None },
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn job(conditions: serde_json::Value) -> Job {
        serde_json::from_value(json!({"metadata": {"name": "r-a1-build"}, "status": {"conditions": conditions}}))
            .unwrap()
    }

    fn pod(name: &str, created: &str, status: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": name, "creationTimestamp": created}, "status": status}))
            .unwrap()
    }

    #[test]
    fn a_running_jobs_pod_that_cannot_pull_its_image_blocks_it() {
        let waiting = |reason: &str| {
            json!({"containerStatuses": [{"name": "build", "image": "x", "imageID": "", "ready": false,
                "restartCount": 0, "state": {"waiting": {"reason": reason, "message": "Back-off pulling image \"x\""}}}]})
        };
        let o = observe_job(&job(json!([])), &[pod("p1", "2026-01-01T00:00:00Z", waiting("ImagePullBackOff"))]);
        let b = o.blocked.unwrap();
        assert_eq!(b.reason, "ImagePullBackOff");
        assert_eq!(b.message, "pod p1: Back-off pulling image \"x\"");
        assert!(o.has_pod);
        // Being created is no problem; only the newest pod counts.
        let o = observe_job(&job(json!([])), &[pod("p1", "2026-01-01T00:00:00Z", waiting("ContainerCreating"))]);
        assert_eq!(o.blocked, None);
        let pods = [
            pod("old", "2026-01-01T00:00:00Z", waiting("ErrImagePull")),
            pod("new", "2026-01-01T00:01:00Z", waiting("ContainerCreating")),
        ];
        assert_eq!(observe_job(&job(json!([])), &pods).blocked, None);
        // A finished Job is judged by its result, not by a waiting pod.
        let failed = job(json!([{"type": "Failed", "status": "True", "reason": "DeadlineExceeded"}]));
        assert_eq!(
            observe_job(&failed, &[pod("p1", "2026-01-01T00:00:00Z", waiting("ImagePullBackOff"))]).blocked,
            None
        );
    }

    #[test]
    fn an_unschedulable_pod_blocks_its_job_with_the_schedulers_words() {
        let status = json!({"conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector."}]});
        let b = observe_job(&job(json!([])), &[pod("p", "2026-01-01T00:00:00Z", status)]).blocked.unwrap();
        assert_eq!(b.reason, "Unschedulable");
        assert!(b.message.starts_with("pod p: 0/3 nodes are available"), "{}", b.message);
        assert!(!b.needs_a_person());
        let o = observe_job(&job(json!([])), &[]);
        assert_eq!((o.has_pod, o.blocked), (false, None));
    }

    #[test]
    fn failed_create_events_say_why_no_pod_exists() {
        let event = |reason: &str, message: &str, at: &str| -> Event {
            serde_json::from_value(json!({"metadata": {"name": "e"}, "involvedObject": {}, "reason": reason,
                "message": message, "lastTimestamp": at}))
            .unwrap()
        };
        let psa = "Error creating: pods \"r-a1-build-x\" is forbidden: violates PodSecurity \"restricted:latest\": seccompProfile";
        let events = [
            event("FailedCreate", "Error creating: exceeded quota", "2026-01-01T00:00:00Z"),
            event("FailedCreate", psa, "2026-01-01T00:00:05Z"),
            event("SuccessfulCreate", "Created pod", "2026-01-01T00:00:09Z"),
        ];
        let b = refused_creation(&events).unwrap();
        assert_eq!((b.reason.as_str(), b.message.as_str()), ("PodSecurityRefused", psa));
        assert!(b.needs_a_person());
        let quota = refused_creation(&events[..1]).unwrap();
        assert_eq!(quota.reason, "PodCreateFailed");
        assert_eq!(refused_creation(&events[2..]), None);
    }
}
