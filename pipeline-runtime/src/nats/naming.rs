//! The names of a job's things on the broker: streams, subjects, the
//! driver's subject, the header that carries a message's sequence number.

use super::broker::EdgeSpec;

/// The header with a message's source sequence number.
pub(super) const SEQ: &str = "Parapipe-Seq";

/// The job's control stream: what every process, and `status`, reads.
pub(super) fn control_spec(job: &str) -> EdgeSpec {
    EdgeSpec {
        stream: format!("PARAPIPE_{job}_CTL"),
        subject: format!("parapipe.{job}.ctl"),
        consumer: String::new(),
        max_messages: -1,
    }
}

/// The prefix of the names of every run's edge streams of a job.
pub(super) fn edges_prefix(job: &str) -> String {
    format!("PARAPIPE_{job}_R")
}

/// Edge `k` of run `run` of a job with `stages` stages: from the source (0)
/// or stage `k`, to stage `k + 1` or the driver's results. Named for the
/// run, so that processes of an earlier run can never take a later run's
/// messages.
pub(super) fn edge_spec(
    job: &str,
    run: u64,
    k: usize,
    stages: usize,
    max_messages: i64,
) -> EdgeSpec {
    EdgeSpec {
        stream: format!("{}{run:016x}_E{k}", edges_prefix(job)),
        subject: format!("parapipe.{job}.r{run:016x}.e{k}"),
        consumer: if k == stages {
            "results".to_owned()
        } else {
            format!("stage{}", k + 1)
        },
        max_messages,
    }
}

/// Where a job's live driver answers (see [`Broker::answer`]).
pub(super) fn driver_subject(job: &str) -> String {
    format!("parapipe.{job}.driver")
}

/// Whether `stream` is an edge stream of some run of job `job`.
pub(super) fn is_edge_of(stream: &str, job: &str) -> bool {
    let Some(rest) = stream.strip_prefix(&edges_prefix(job)) else {
        return false;
    };
    let Some((run, edge)) = rest.split_once("_E") else {
        return false;
    };
    run.len() == 16
        && run.bytes().all(|b| b.is_ascii_hexdigit())
        && !edge.is_empty()
        && edge.bytes().all(|b| b.is_ascii_digit())
}
