//! A run as a self-contained SVG chart: throughput per stage, latency per
//! stage on a log scale, the items each worker of a stage took, queue
//! depth over time.

use std::collections::HashMap;
use std::fmt::Write as _;

use parapipe::profile::{MAIN_PIPELINE_NAME, Profile, RunSummary, Sample, StageProfile};

use crate::load::{Load, percent};
use crate::units::{compact, decade_label, rate, secs, started};

const FONT: &str = "DejaVu Sans, Helvetica, Arial, sans-serif";
/// Stage colours (Tableau 10), used for the queue depth lines.
const PALETTE: [&str; 10] = [
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
    "#9c755f", "#bab0ac",
];
/// Mean, median and p99 bars.
const LATENCY_COLOURS: [(&str, &str); 3] = [
    ("mean", "#4e79a7"),
    ("median", "#59a14f"),
    ("p99", "#e15759"),
];

/// Escapes the XML special characters of `s`.
fn xml(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            _ => out.push(c),
        }
    }
    out
}

/// `s`, cut to `max` characters with an ellipsis.
fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut cut: String = s.chars().take(max.saturating_sub(1)).collect();
        cut.push('…');
        cut
    }
}

/// Roughly how wide `s` is in pixels at `size` (sans-serif averages about
/// 0.6 em a character; over-estimating only leaves more room).
fn text_width(s: &str, size: f64) -> f64 {
    s.chars().count() as f64 * size * 0.62
}

/// A "nice" axis for `0..=max`: its top and the step between ticks.
fn nice_axis(max: f64) -> (f64, f64) {
    if max.is_nan() || max <= 0.0 {
        return (1.0, 0.25);
    }
    let rough = max / 5.0;
    let magnitude = 10f64.powf(rough.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|step| *step >= rough)
        .unwrap_or(10.0 * magnitude);
    ((max / step).ceil() * step, step)
}

/// A tick label at `v` on an axis stepping by `step`: as many decimals as
/// the step needs (`0.0005`, `0.001`, `0.0015`), thousands as `k`.
fn tick(v: f64, step: f64) -> String {
    if v.abs() >= 1e3 {
        return compact(v);
    }
    let decimals = (0..10)
        .find(|d| {
            let scaled = step * 10f64.powi(*d);
            (scaled - scaled.round()).abs() < 1e-6 * scaled.max(1.0)
        })
        .unwrap_or(10) as usize;
    format!("{v:.decimals$}")
}

struct Canvas {
    body: String,
}

impl Canvas {
    fn text(&mut self, x: f64, y: f64, size: f64, attrs: &str, s: &str) {
        let _ = writeln!(
            self.body,
            r#"<text x="{x:.1}" y="{y:.1}" font-size="{size}" {attrs}>{}</text>"#,
            xml(s)
        );
    }

    fn line(&mut self, x1: f64, y1: f64, x2: f64, y2: f64, stroke: &str) {
        let _ = writeln!(
            self.body,
            r#"<line x1="{x1:.1}" y1="{y1:.1}" x2="{x2:.1}" y2="{y2:.1}" stroke="{stroke}" stroke-width="1"/>"#
        );
    }

    fn rect(&mut self, x: f64, y: f64, w: f64, h: f64, fill: &str, tip: &str) {
        let _ = writeln!(
            self.body,
            r#"<rect x="{x:.1}" y="{y:.1}" width="{w:.1}" height="{h:.1}" fill="{fill}"><title>{}</title></rect>"#,
            xml(tip)
        );
    }
}

/// Layout of the chart, in pixels.
struct Frame {
    /// Left edge of the plots (stage names are right-aligned before it).
    left: f64,
    /// Width of the plots.
    plot: f64,
    /// Total width.
    width: f64,
}

const TITLE: f64 = 16.0;
const LABEL: f64 = 12.0;
const SMALL: f64 = 10.5;
const BAR_ROW: f64 = 24.0;
const LATENCY_BAR: f64 = 10.0;
const LATENCY_ROW: f64 = 3.0 * LATENCY_BAR + 14.0;
const QUEUE_PLOT: f64 = 220.0;
/// A stage's row of items per worker: its bar, and a line of text under it.
const LOAD_ROW: f64 = 38.0;
const LOAD_BAR: f64 = 14.0;
/// The colour of the flag on an imbalanced stage.
const FLAG: &str = "#c0392b";
/// Room right of a bar's end for its value.
const VALUE_ROOM: f64 = 80.0;

/// The run as one SVG document: throughput per stage, latency per stage
/// (log scale), items per worker (if any stage counted them), queue depth
/// over time.
pub(crate) fn svg(summary: &RunSummary, profile: &Profile, samples: &[Sample]) -> String {
    let stages = profile.stages();
    let longest = stages
        .iter()
        .map(|s| text_width(&s.name, LABEL))
        .fold(0.0, f64::max);
    let left = (longest + 24.0).max(140.0);
    let plot = 620.0;
    let frame = Frame {
        left,
        plot,
        width: left + plot + VALUE_ROOM + 20.0,
    };
    let mut c = Canvas {
        body: String::new(),
    };

    let title = format!(
        "parapipe profile: run {} ({})",
        summary.id, summary.pipeline
    );
    c.text(20.0, 30.0, 18.0, r#"font-weight="bold""#, &title);
    let subtitle = format!(
        "started {} UTC · duration {} · {} items · {}",
        started(&summary.started_at),
        summary
            .duration
            .map_or("unknown (never finished)".into(), |d| secs(d.as_secs_f64())),
        summary.items,
        shorten(&summary.outcome.to_string(), 80)
    );
    c.text(20.0, 50.0, LABEL, r##"fill="#555""##, &subtitle);

    let mut y = 80.0;
    if stages.is_empty() {
        c.text(
            20.0,
            y,
            LABEL,
            r##"fill="#555""##,
            "No per-stage profile was stored for this run (it never finished, or storing it failed).",
        );
    } else {
        y = throughput_panel(&mut c, &frame, stages, y);
        y = latency_panel(&mut c, &frame, stages, y + 30.0);
        y = load_panel(&mut c, &frame, stages, y + 30.0);
    }
    y = queue_panel(&mut c, &frame, stages, samples, y + 30.0);
    let height = y + 20.0;
    let width = frame.width;
    format!(
        concat!(
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w:.0}" height="{h:.0}" "#,
            r#"viewBox="0 0 {w:.0} {h:.0}" font-family="{font}">"#,
            "\n<title>{title}</title>\n",
            r#"<rect width="100%" height="100%" fill="white"/>"#,
            "\n{body}</svg>\n"
        ),
        w = width,
        h = height,
        font = FONT,
        title = xml(&title),
        body = c.body
    )
}

/// The left and bottom axis lines of a panel and the label under it;
/// returns where the next panel may start.
fn axes(c: &mut Canvas, frame: &Frame, top: f64, bottom: f64, label: &str) -> f64 {
    c.line(frame.left, top, frame.left, bottom, "#333");
    c.line(frame.left, bottom, frame.left + frame.plot, bottom, "#333");
    c.text(
        frame.left + frame.plot / 2.0,
        bottom + 34.0,
        LABEL,
        r#"text-anchor="middle""#,
        label,
    );
    bottom + 40.0
}

/// Stage names right-aligned left of the plot, one per row.
fn stage_label(c: &mut Canvas, frame: &Frame, y: f64, name: &str) {
    c.text(
        frame.left - 10.0,
        y,
        LABEL,
        r#"text-anchor="end" dominant-baseline="middle""#,
        name,
    );
}

/// Per-stage throughput bars on a linear axis; returns the y below it.
fn throughput_panel(c: &mut Canvas, frame: &Frame, stages: &[StageProfile], top: f64) -> f64 {
    c.text(
        20.0,
        top,
        TITLE,
        r#"font-weight="bold""#,
        "Throughput per stage (items emitted per second of active time)",
    );
    let plot_top = top + 16.0;
    let max = stages
        .iter()
        .map(|s| s.throughput)
        .filter(|t| t.is_finite())
        .fold(0.0, f64::max);
    let (axis_max, step) = nice_axis(max);
    let x_of = |v: f64| frame.left + (v / axis_max).clamp(0.0, 1.0) * frame.plot;
    let bottom = plot_top + stages.len() as f64 * BAR_ROW;
    grid_linear(c, frame, plot_top, bottom, axis_max, step);
    for (i, s) in stages.iter().enumerate() {
        let row = plot_top + i as f64 * BAR_ROW;
        let mid = row + BAR_ROW / 2.0;
        stage_label(c, frame, mid, &s.name);
        let v = if s.throughput.is_finite() {
            s.throughput
        } else {
            0.0
        };
        let end = x_of(v);
        c.rect(
            frame.left,
            row + 4.0,
            end - frame.left,
            BAR_ROW - 8.0,
            PALETTE[0],
            &format!("{}: {} items/s", s.name, rate(v)),
        );
        c.text(
            end + 5.0,
            mid,
            SMALL,
            r#"dominant-baseline="middle""#,
            &format!("{}/s", rate(v)),
        );
    }
    axes(c, frame, plot_top, bottom, "items per second")
}

/// Vertical grid lines and tick labels for `0..=axis_max` every `step`.
fn grid_linear(c: &mut Canvas, frame: &Frame, top: f64, bottom: f64, axis_max: f64, step: f64) {
    let ticks = (axis_max / step).round() as usize;
    for k in 0..=ticks {
        let v = k as f64 * step;
        let x = frame.left + v / axis_max * frame.plot;
        c.line(x, top, x, bottom, "#e3e3e3");
        c.line(x, bottom, x, bottom + 4.0, "#333");
        c.text(
            x,
            bottom + 16.0,
            SMALL,
            r#"text-anchor="middle""#,
            &tick(v, step),
        );
    }
}

/// Per-stage mean, median and p99 latency on a log axis; returns the y
/// below it.
fn latency_panel(c: &mut Canvas, frame: &Frame, stages: &[StageProfile], top: f64) -> f64 {
    c.text(
        20.0,
        top,
        TITLE,
        r#"font-weight="bold""#,
        "Latency per item (log scale)",
    );
    // The legend, on the title's line, right-aligned to the plot.
    let mut x = frame.left + frame.plot + VALUE_ROOM;
    for (name, colour) in LATENCY_COLOURS.iter().rev() {
        x -= text_width(name, LABEL) + 6.0;
        c.text(x, top, LABEL, "", name);
        x -= 16.0;
        c.rect(x, top - 10.0, 12.0, 12.0, colour, name);
        x -= 12.0;
    }
    let plot_top = top + 16.0;
    let values = |s: &StageProfile| [s.latency.mean, s.latency.median, s.latency.p99];
    let positive = stages
        .iter()
        .flat_map(values)
        .filter(|v| v.is_finite() && *v > 0.0);
    let (lo, hi) = positive.fold((f64::INFINITY, 0.0f64), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    let (mut lo, mut hi) = if hi > 0.0 {
        (lo.log10().floor(), hi.log10().ceil())
    } else {
        (-6.0, 0.0)
    };
    if hi <= lo {
        hi = lo + 1.0;
    }
    // At least three decades, so that a single decade is not stretched.
    while hi - lo < 3.0 {
        lo -= 1.0;
        if hi - lo < 3.0 {
            hi += 1.0;
        }
    }
    let x_of = |v: f64| frame.left + ((v.log10() - lo) / (hi - lo)).clamp(0.0, 1.0) * frame.plot;
    let bottom = plot_top + stages.len() as f64 * LATENCY_ROW;
    let mut decade = lo;
    while decade <= hi + 0.5 {
        let x = x_of(10f64.powf(decade));
        c.line(x, plot_top, x, bottom, "#e3e3e3");
        c.line(x, bottom, x, bottom + 4.0, "#333");
        c.text(
            x,
            bottom + 16.0,
            SMALL,
            r#"text-anchor="middle""#,
            &decade_label(decade),
        );
        decade += 1.0;
    }
    for (i, s) in stages.iter().enumerate() {
        let row = plot_top + i as f64 * LATENCY_ROW;
        stage_label(c, frame, row + LATENCY_ROW / 2.0, &s.name);
        if !values(s).iter().any(|v| v.is_finite() && *v > 0.0) {
            c.text(
                frame.left + 8.0,
                row + LATENCY_ROW / 2.0,
                SMALL,
                r##"dominant-baseline="middle" fill="#555""##,
                "no item measured",
            );
            continue;
        }
        for (k, (v, (what, colour))) in values(s).iter().zip(LATENCY_COLOURS).enumerate() {
            let bar_top = row + 7.0 + k as f64 * LATENCY_BAR;
            let measured = v.is_finite() && *v > 0.0;
            let end = if measured { x_of(*v) } else { frame.left };
            if measured {
                c.rect(
                    frame.left,
                    bar_top + 1.0,
                    end - frame.left,
                    LATENCY_BAR - 2.0,
                    colour,
                    &format!("{}: {what} {}", s.name, secs(*v)),
                );
            }
            c.text(
                end + 5.0,
                bar_top + LATENCY_BAR / 2.0,
                9.5,
                r#"dominant-baseline="middle""#,
                &if measured { secs(*v) } else { "-".into() },
            );
        }
    }
    axes(
        c,
        frame,
        plot_top,
        bottom,
        "seconds per item (log scale: each grid line is 10x the one before)",
    )
}

/// For each stage of several workers that counted them, one bar split
/// into each worker's share of its items, a tick where each even share
/// would end, and the busiest worker's share under it, flagged when far
/// from even; returns the y below it (`top` less the gap before it, if
/// no stage has such counts).
fn load_panel(c: &mut Canvas, frame: &Frame, stages: &[StageProfile], top: f64) -> f64 {
    let loads: Vec<(&StageProfile, Load<'_>)> = stages
        .iter()
        .filter_map(|s| Some((s, Load::of(s)?)))
        .collect();
    if loads.is_empty() {
        return top - 30.0;
    }
    c.text(
        20.0,
        top,
        TITLE,
        r#"font-weight="bold""#,
        "Items taken per worker (each tick marks an even share)",
    );
    let plot_top = top + 16.0;
    for (i, (s, load)) in loads.iter().enumerate() {
        let row = plot_top + i as f64 * LOAD_ROW;
        let bar_top = row + 4.0;
        stage_label(c, frame, bar_top + LOAD_BAR / 2.0, &s.name);
        let total: u64 = load.counts.iter().sum();
        let mut x = frame.left;
        for (w, n) in load.counts.iter().enumerate() {
            let share = *n as f64 / total as f64;
            let width = share * frame.plot;
            c.rect(
                x,
                bar_top,
                width,
                LOAD_BAR,
                PALETTE[w % PALETTE.len()],
                &format!("{}: worker {w} took {n} items ({})", s.name, percent(share)),
            );
            x += width;
        }
        let workers = load.counts.len();
        for k in 1..workers {
            let x = frame.left + k as f64 / workers as f64 * frame.plot;
            c.line(x, bar_top - 2.0, x, bar_top + LOAD_BAR + 2.0, "#333");
        }
        let attrs = match load.imbalanced() {
            true => format!(r#"fill="{FLAG}" font-weight="bold""#),
            false => r##"fill="#555""##.to_owned(),
        };
        c.text(
            frame.left,
            bar_top + LOAD_BAR + 12.0,
            SMALL,
            &attrs,
            &load.summary(),
        );
    }
    plot_top + loads.len() as f64 * LOAD_ROW
}

/// A queue depth line's colour and dash: solid for the first ten stages,
/// dashed for the next ten, and so on alternating.
fn line_style(i: usize) -> (&'static str, &'static str) {
    let dash = if (i / PALETTE.len()) % 2 == 1 {
        r#" stroke-dasharray="6 3""#
    } else {
        ""
    };
    (PALETTE[i % PALETTE.len()], dash)
}

/// The samples as one series of (time, queue depth) per stage, in pipeline
/// order, then any stage only the samples name. Two stages may share a
/// name (nothing in the store forbids it): the k-th sample of a name at
/// one moment belongs to the k-th stage of that name, labelled `name (k)`.
fn queue_series(stages: &[StageProfile], samples: &[Sample]) -> Vec<(String, Vec<(f64, u64)>)> {
    let mut keys: Vec<(&str, usize)> = Vec::new();
    for s in stages.iter().filter(|s| s.name != MAIN_PIPELINE_NAME) {
        let k = keys.iter().filter(|(n, _)| *n == s.name).count();
        keys.push((&s.name, k));
    }
    let mut points: HashMap<(&str, usize), Vec<(f64, u64)>> = HashMap::new();
    let mut seen: HashMap<&str, usize> = HashMap::new();
    let mut now = f64::NAN;
    for s in samples {
        if s.t != now {
            seen.clear();
            now = s.t;
        }
        let k = seen.entry(&s.stage).or_insert(0);
        let key = (s.stage.as_str(), *k);
        *k += 1;
        if !keys.contains(&key) {
            keys.push(key);
        }
        points.entry(key).or_default().push((s.t, s.queue_depth));
    }
    keys.into_iter()
        .filter_map(|key| {
            let line = points.remove(&key)?;
            let label = match key {
                (name, 0) => name.to_owned(),
                (name, k) => format!("{name} ({})", k + 1),
            };
            Some((label, line))
        })
        .collect()
}

/// Queue depth over time, one line per stage; returns the y below it.
fn queue_panel(
    c: &mut Canvas,
    frame: &Frame,
    stages: &[StageProfile],
    samples: &[Sample],
    top: f64,
) -> f64 {
    c.text(
        20.0,
        top,
        TITLE,
        r#"font-weight="bold""#,
        "Queue depth over time (items waiting in each stage's output queue)",
    );
    let plot_top = top + 16.0;
    let series = queue_series(stages, samples);
    if series.is_empty() {
        c.text(
            frame.left,
            plot_top + 20.0,
            LABEL,
            r##"fill="#555""##,
            "no samples recorded for this run",
        );
        return plot_top + 30.0;
    }
    let t_max = samples.iter().map(|s| s.t).fold(0.0, f64::max);
    let depth_max = samples.iter().map(|s| s.queue_depth).max().unwrap_or(0);
    let (t_axis, t_step) = nice_axis(t_max);
    let (d_axis, d_step) = if depth_max == 0 {
        (1.0, 1.0)
    } else {
        let (top, step) = nice_axis(depth_max as f64);
        // Depths are whole items: no tick at 2.5.
        let step = step.ceil();
        ((top / step).ceil() * step, step)
    };
    let bottom = plot_top + QUEUE_PLOT;
    let x_of = |t: f64| frame.left + (t / t_axis).clamp(0.0, 1.0) * frame.plot;
    let y_of = |d: u64| bottom - (d as f64 / d_axis).clamp(0.0, 1.0) * QUEUE_PLOT;

    grid_linear(c, frame, plot_top, bottom, t_axis, t_step);
    let d_ticks = (d_axis / d_step).round() as u64;
    for k in 0..=d_ticks {
        let d = k as f64 * d_step;
        let y = bottom - d / d_axis * QUEUE_PLOT;
        c.line(frame.left, y, frame.left + frame.plot, y, "#e3e3e3");
        c.line(frame.left - 4.0, y, frame.left, y, "#333");
        c.text(
            frame.left - 8.0,
            y,
            SMALL,
            r#"text-anchor="end" dominant-baseline="middle""#,
            &tick(d, d_step),
        );
    }
    // The legend goes under the axis label: the panel ends below it.
    axes(c, frame, plot_top, bottom, "seconds since the run started");
    let axis_x = frame.left - 8.0 - text_width(&tick(d_axis, d_step), SMALL) - 12.0;
    let axis_y = plot_top + QUEUE_PLOT / 2.0;
    c.text(
        axis_x,
        axis_y,
        LABEL,
        &format!(r#"text-anchor="middle" transform="rotate(-90 {axis_x:.1} {axis_y:.1})""#),
        "items queued",
    );

    for (i, (name, points)) in series.iter().enumerate() {
        let (colour, dash) = line_style(i);
        let mut coords = String::new();
        for (t, d) in points {
            let _ = write!(coords, "{:.1},{:.1} ", x_of(*t), y_of(*d));
        }
        let _ = writeln!(
            c.body,
            r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="2" stroke-linejoin="round"{dash}><title>{}</title></polyline>"#,
            coords.trim_end(),
            xml(name)
        );
        if let [(t, d)] = points.as_slice() {
            let _ = writeln!(
                c.body,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{colour}"/>"#,
                x_of(*t),
                y_of(*d)
            );
        }
    }

    // The legend, below the axis label, wrapping across rows.
    let mut x = frame.left;
    let mut y = bottom + 58.0;
    for (i, (name, _)) in series.iter().enumerate() {
        let w = 24.0 + text_width(name, LABEL) + 20.0;
        if x > frame.left && x + w > frame.width - 10.0 {
            x = frame.left;
            y += 20.0;
        }
        let (colour, dash) = line_style(i);
        let _ = writeln!(
            c.body,
            r#"<line x1="{x:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{colour}" stroke-width="3"{dash}/>"#,
            x + 20.0,
            ly = y - 4.0
        );
        c.text(x + 24.0, y, LABEL, "", name);
        x += w;
    }
    y + 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_and_axes_read_well() {
        assert_eq!(tick(0.0015, 0.0005), "0.0015");
        assert_eq!(tick(0.001, 0.0005), "0.0010");
        assert_eq!(tick(0.5, 0.25), "0.50");
        assert_eq!(tick(40.0, 20.0), "40");
        assert_eq!(tick(2500.0, 500.0), "2.5k");
        assert_eq!(nice_axis(97.0), (100.0, 20.0));
    }

    #[test]
    fn escapes_xml() {
        assert_eq!(xml(r#"a<b>&"c'"#), "a&lt;b&gt;&amp;&quot;c&apos;");
    }
}
