//! Numbers as people read them: times, rates, dates.

/// `2024-05-01T12:00:00.123Z` as `2024-05-01 12:00:00`.
pub(crate) fn started(iso: &str) -> String {
    let s = iso.trim_end_matches('Z').replacen('T', " ", 1);
    match s.split_once('.') {
        Some((whole, _)) => whole.to_owned(),
        None => s,
    }
}

/// Three significant digits.
pub(crate) fn sig3(v: f64) -> String {
    if v < 9.995 {
        format!("{v:.2}")
    } else if v < 99.95 {
        format!("{v:.1}")
    } else {
        format!("{v:.0}")
    }
}

/// Seconds in the unit that reads best: `1.25 s`, `12.5 ms`, `125 µs`, `80.0 ns`.
pub(crate) fn secs(s: f64) -> String {
    if !s.is_finite() {
        return "-".into();
    }
    if s == 0.0 {
        return "0 s".into();
    }
    for (scale, unit) in [(1.0, "s"), (1e-3, "ms"), (1e-6, "µs")] {
        if s >= scale * 0.9995 {
            return format!("{} {unit}", sig3(s / scale));
        }
    }
    format!("{} ns", sig3(s / 1e-9))
}

/// `10^exponent` seconds as a tick label: `10 ns`, `1 µs`, `100 ms`, `10 s`.
pub(crate) fn decade_label(exponent: f64) -> String {
    let e = exponent.round() as i32;
    let (unit, base) = match e {
        e if e >= 0 => ("s", 0),
        -3..=-1 => ("ms", -3),
        -6..=-4 => ("µs", -6),
        _ => ("ns", -9),
    };
    let v = 10f64.powi(e - base);
    if v >= 1.0 {
        format!("{v:.0} {unit}")
    } else {
        format!("{} {unit}", compact(v))
    }
}

/// Items per second: one decimal below 10 000, whole above.
pub(crate) fn rate(r: f64) -> String {
    if !r.is_finite() {
        "-".into()
    } else if r < 10_000.0 {
        format!("{r:.1}")
    } else {
        format!("{r:.0}")
    }
}

/// A tick label: `2.5k`, `1.2M`, `0.25`, `40`.
pub(crate) fn compact(v: f64) -> String {
    let trim = |s: String| {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_owned()
        } else {
            s
        }
    };
    let a = v.abs();
    if a >= 1e6 {
        format!("{}M", trim(format!("{:.2}", v / 1e6)))
    } else if a >= 1e3 {
        format!("{}k", trim(format!("{:.2}", v / 1e3)))
    } else {
        trim(format!("{v:.3}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_read_well() {
        assert_eq!(secs(1.5), "1.50 s");
        assert_eq!(secs(0.0123), "12.3 ms");
        assert_eq!(secs(0.000_125), "125 µs");
        assert_eq!(secs(80e-9), "80.0 ns");
        assert_eq!(secs(0.9999), "1.00 s");
        assert_eq!(secs(0.0), "0 s");
        assert_eq!(compact(2500.0), "2.5k");
        assert_eq!(decade_label(-8.0), "10 ns");
        assert_eq!(decade_label(-6.0), "1 µs");
        assert_eq!(decade_label(-1.0), "100 ms");
        assert_eq!(decade_label(1.0), "10 s");
        assert_eq!(decade_label(-10.0), "0.1 ns");
        assert_eq!(compact(0.25), "0.25");
    }
}
