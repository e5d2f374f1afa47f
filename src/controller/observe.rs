//! Turning a Job and its pods into what the decision core needs (pure).

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ContainerStateTerminated, Pod};
use kube::ResourceExt;

use super::decide::{JobObservation, JobState};

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

/// What a Job says about its step. `pods` are the Job's pods; they are only needed once
/// the Job finished (for the termination message).
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
    }
}
