//! The text the viewer prints: the list of runs, a run's stages and job
//! status, two runs compared.

use std::fmt::Write as _;
use std::path::Path;

use parapipe::profile::{self, JobSample, Profile, RunSummary, StageProfile};

use crate::load::Load;
use crate::units::{rate, secs, started};
use crate::{Failure, data};

pub(crate) fn list(db: &Path) -> Result<String, Failure> {
    let runs = profile::runs(db).map_err(data)?;
    if runs.is_empty() {
        return Ok(format!("no runs in {}\n", db.display()));
    }
    let rows = runs
        .iter()
        .map(|r| {
            vec![
                r.id.to_string(),
                r.pipeline.clone(),
                started(&r.started_at),
                r.duration.map_or("-".into(), |d| secs(d.as_secs_f64())),
                r.items.to_string(),
                r.outcome.to_string(),
            ]
        })
        .collect();
    Ok(table(
        &[
            "id",
            "name",
            "started (UTC)",
            "duration",
            "items",
            "outcome",
        ],
        &[
            Align::Right,
            Align::Left,
            Align::Left,
            Align::Right,
            Align::Right,
            Align::Left,
        ],
        rows,
    ))
}

pub(crate) fn header(summary: &RunSummary) -> String {
    format!(
        "run {}: {}\nstarted   {} UTC\nduration  {}\nitems     {}\noutcome   {}\n",
        summary.id,
        summary.pipeline,
        started(&summary.started_at),
        summary
            .duration
            .map_or("- (never finished)".into(), |d| secs(d.as_secs_f64())),
        summary.items,
        summary.outcome,
    )
}

pub(crate) fn show(summary: &RunSummary, profile: &Profile) -> String {
    let rows = profile
        .stages()
        .iter()
        .map(|s| {
            vec![
                s.name.clone(),
                s.kind.clone(),
                if s.kind == "pipeline" {
                    "-".into()
                } else {
                    s.workers.to_string()
                },
                s.items_in.to_string(),
                s.items_out.to_string(),
                format!("{:.3}", s.busy.as_secs_f64()),
                format!("{:.3}", s.active.as_secs_f64()),
                latency(s.latency.mean, s),
                latency(s.latency.median, s),
                latency(s.latency.p99, s),
                rate(s.throughput),
                format!("{:.3}", s.cpu_user.as_secs_f64()),
                format!("{:.3}", s.cpu_system.as_secs_f64()),
                s.queue_max.to_string(),
                s.filtered.to_string(),
                s.skipped.to_string(),
            ]
        })
        .collect();
    let stages = table(
        &[
            "stage",
            "kind",
            "workers",
            "in",
            "out",
            "busy s",
            "active s",
            "mean",
            "median",
            "p99",
            "items/s",
            "cpu user s",
            "cpu sys s",
            "queue max",
            "filtered",
            "skipped",
        ],
        &[Align::Left, Align::Left],
        rows,
    );
    let load = load(profile);
    let job = profile.job().map(job).unwrap_or_default();
    if profile.stages().is_empty() {
        return format!(
            "{}\nno per-stage profile was stored for this run (it never finished, or storing it failed)\n{job}",
            header(summary)
        );
    }
    format!("{}\n{stages}{load}{job}", header(summary))
}

/// The items each worker of a stage took, for the stages of several
/// workers that counted them, the busiest one's share flagged when far
/// from even (a keyed stage's hot key); empty if no stage has any.
fn load(profile: &Profile) -> String {
    let rows: Vec<Vec<String>> = profile
        .stages()
        .iter()
        .filter_map(|s| {
            let load = Load::of(s)?;
            Some(vec![s.name.clone(), load.counts(), load.summary()])
        })
        .collect();
    if rows.is_empty() {
        return String::new();
    }
    format!(
        "\nitems taken per worker\n{}",
        table(
            &["stage", "by worker", "busiest"],
            &[Align::Left, Align::Left, Align::Left],
            rows,
        )
    )
}

/// A distributed job's status: a row per stage, then one per process.
pub(crate) fn job(sample: &JobSample) -> String {
    let mut rows = Vec::new();
    for stage in &sample.stages {
        rows.push(vec![
            stage.name.clone(),
            "(all)".into(),
            stage.taken.to_string(),
            stage.emitted.to_string(),
            stage.pending_messages.to_string(),
        ]);
        for p in &stage.by_process {
            rows.push(vec![
                String::new(),
                p.process.clone(),
                p.taken.to_string(),
                p.emitted.to_string(),
                String::new(),
            ]);
        }
    }
    format!(
        "\njob {}: {} (as recorded {} into this run)\n{}",
        sample.job,
        sample.state,
        secs(sample.t),
        table(
            &["stage", "process", "taken", "emitted", "pending messages"],
            &[Align::Left, Align::Left],
            rows,
        )
    )
}

/// A latency, or `-` for a stage that measured none.
fn latency(value: f64, stage: &StageProfile) -> String {
    if stage.items_out == 0 && value == 0.0 {
        "-".into()
    } else {
        secs(value)
    }
}

pub(crate) fn compare(a: &(RunSummary, Profile), b: &(RunSummary, Profile)) -> String {
    let stage_names =
        |p: &Profile| -> Vec<String> { p.stages().iter().map(|s| s.name.clone()).collect() };
    let names = union_of_stages(&stage_names(&a.1), &stage_names(&b.1));
    let cell = |p: &Profile, name: &str, f: fn(&StageProfile) -> String| {
        p.stage(name).map_or("-".to_owned(), f)
    };
    let ratio = |p: &Profile, q: &Profile, name: &str, f: fn(&StageProfile) -> f64| match (
        p.stage(name).map(f),
        q.stage(name).map(f),
    ) {
        (Some(x), Some(y)) if x > 0.0 && y.is_finite() => format!("{:.2}x", y / x),
        _ => "-".to_owned(),
    };
    let rows = names
        .iter()
        .map(|name| {
            vec![
                name.clone(),
                cell(&a.1, name, |s| latency(s.latency.mean, s)),
                cell(&b.1, name, |s| latency(s.latency.mean, s)),
                ratio(&a.1, &b.1, name, |s| s.latency.mean),
                cell(&a.1, name, |s| rate(s.throughput)),
                cell(&b.1, name, |s| rate(s.throughput)),
                ratio(&a.1, &b.1, name, |s| s.throughput),
            ]
        })
        .collect();
    let line = |tag: &str, (r, _): &(RunSummary, Profile)| {
        format!(
            "{tag}: run {} ({}), started {} UTC, {}, {} items, {}\n",
            r.id,
            r.pipeline,
            started(&r.started_at),
            r.duration.map_or("-".into(), |d| secs(d.as_secs_f64())),
            r.items,
            r.outcome
        )
    };
    format!(
        "{}{}\n{}",
        line("A", a),
        line("B", b),
        table(
            &[
                "stage",
                "mean A",
                "mean B",
                "B/A",
                "items/s A",
                "items/s B",
                "B/A"
            ],
            &[Align::Left],
            rows,
        )
    )
}

/// Stage names of both runs, in order: `a`'s, with each stage only `b` has
/// placed after the stage that precedes it in `b`.
fn union_of_stages(a: &[String], b: &[String]) -> Vec<String> {
    let mut names = a.to_vec();
    let mut after: Option<usize> = None;
    for name in b {
        match names.iter().position(|n| n == name) {
            Some(i) => after = Some(i),
            None => {
                let at = after.map_or(0, |i| i + 1);
                names.insert(at, name.clone());
                after = Some(at);
            }
        }
    }
    names
}

#[derive(Clone, Copy)]
enum Align {
    Left,
    Right,
}

/// An aligned table: columns two spaces apart, aligned as `align` says
/// (columns past its end align right).
fn table(headers: &[&str], align: &[Align], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let header: Vec<String> = headers.iter().map(|h| (*h).to_owned()).collect();
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(&widths).enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            match align.get(i).copied().unwrap_or(Align::Right) {
                Align::Left => {
                    let _ = write!(line, "{cell:<w$}");
                }
                Align::Right => {
                    let _ = write!(line, "{cell:>w$}");
                }
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn union_keeps_both_orders() {
        let names = |p: &[&str]| -> Vec<String> { p.iter().map(|s| s.to_string()).collect() };
        let merged = union_of_stages(&names(&["M", "a", "c"]), &names(&["M", "a", "b", "c", "d"]));
        assert_eq!(merged, names(&["M", "a", "b", "c", "d"]));
        let merged = union_of_stages(&names(&["M", "x"]), &names(&["y", "M"]));
        assert_eq!(merged, names(&["y", "M", "x"]));
    }
}
