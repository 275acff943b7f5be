//! The measurements, printed as a table or as JSON lines, and drawn as an SVG chart.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// One figure.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Measurement {
    /// What was measured (see [`describe`]).
    pub(crate) scenario: String,
    /// `memory`, `sqlx`, `native`, or `postgres` for the reference figures.
    pub(crate) backend: String,
    /// The figure.
    pub(crate) value: f64,
    /// Its unit.
    pub(crate) unit: String,
    /// The physical limit it compares to (PostgreSQL's own one-row INSERT commit rate at the
    /// same client count), when there is one.
    pub(crate) reference: Option<f64>,
}

impl Measurement {
    pub(crate) fn new(scenario: &str, backend: &str, value: f64, unit: &str) -> Self {
        Measurement {
            scenario: scenario.to_owned(),
            backend: backend.to_owned(),
            value,
            unit: unit.to_owned(),
            reference: None,
        }
    }

    pub(crate) fn with_reference(mut self, reference: Option<f64>) -> Self {
        self.reference = reference;
        self
    }

    /// One JSON object on one line.
    pub(crate) fn json_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".to_owned())
    }
}

/// A readable description of a scenario, and the target of issue 6 it is held to, if any.
pub(crate) fn describe(scenario: &str) -> (&'static str, Option<&'static str>) {
    match scenario {
        "insert_1_client" => ("one-row INSERT commits, 1 client", None),
        "insert_8_clients" => ("one-row INSERT commits, 8 clients", None),
        "insert_16_clients" => ("one-row INSERT commits, 16 clients", None),
        "insert_32_clients" => ("one-row INSERT commits, 32 clients", None),
        "burn_down_1_process" => ("burn-down, 1 worker process x 64", Some(">= 5000")),
        "burn_down_2_processes" => ("burn-down, 2 worker processes x 64", Some(">= 5000")),
        "burn_down_4_processes" => ("burn-down, 4 worker processes x 64", Some(">= 5000")),
        "db_cpu_per_1000_1_process" => ("database CPU per 1,000 tasks, 1 process", None),
        "db_cpu_per_1000_2_processes" => ("database CPU per 1,000 tasks, 2 processes", None),
        "db_cpu_per_1000_4_processes" => ("database CPU per 1,000 tasks, 4 processes", None),
        "worker_cpu_per_1000_1_process" => ("worker CPU per 1,000 tasks, 1 process", None),
        "worker_cpu_per_1000_2_processes" => ("worker CPU per 1,000 tasks, 2 processes", None),
        "worker_cpu_per_1000_4_processes" => ("worker CPU per 1,000 tasks, 4 processes", None),
        "spawn_single" => ("spawn one by one, 1 client", None),
        "spawn_batch" => ("spawn_many, batches of 1,000", None),
        "start_listen_p50" => ("spawn-to-start p50, LISTEN/NOTIFY", Some("< 5")),
        "start_listen_p99" => ("spawn-to-start p99, LISTEN/NOTIFY", Some("< 20")),
        "start_poll_p50" => ("spawn-to-start p50, poll-only (25 ms)", None),
        "start_poll_p99" => ("spawn-to-start p99, poll-only (25 ms)", None),
        "step_fresh_p50" => ("fresh step p50", Some("< 1")),
        "step_fresh_mean" => ("fresh step, mean of 100", None),
        "replay_100_cached" => ("replay of 100 cached steps, total", Some("< 5")),
        "checkpoint_1mb" => ("1 MB checkpoint (step)", None),
        "sleep_wake_p50" => ("sleep wake-up after the due time, p50", None),
        "sleep_wake_max" => ("sleep wake-up after the due time, max", None),
        "event_wake_p50" => ("event wake-up after the emit, p50", None),
        "event_wake_max" => ("event wake-up after the emit, max", None),
        "steps_per_second" => ("steps per second, 1,000-step tasks", Some(">= 100000")),
        "long_run_tasks" => ("long run: tasks drained by 1 process", None),
        "long_run_throughput" => ("long run: throughput", None),
        "worker_rss_ready" => ("worker RSS when ready", None),
        "worker_rss_warm" => ("worker RSS after 10% of the run", None),
        "worker_rss_end" => ("worker RSS at the end", None),
        _ => ("", None),
    }
}

fn format_value(value: f64) -> String {
    let magnitude = value.abs();
    if magnitude == 0.0 {
        return "0".to_owned();
    }
    if magnitude >= 1000.0 {
        let whole = value.round() as i64;
        let digits = whole.abs().to_string();
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i).is_multiple_of(3) {
                out.push(',');
            }
            out.push(c);
        }
        if whole < 0 { format!("-{out}") } else { out }
    } else if magnitude >= 100.0 {
        format!("{value:.0}")
    } else if magnitude >= 10.0 {
        format!("{value:.1}")
    } else if magnitude >= 1.0 {
        format!("{value:.2}")
    } else if magnitude >= 0.01 {
        format!("{value:.3}")
    } else {
        format!("{value:.4}")
    }
}

/// The order of the table's rows; scenarios not listed come last, in order of appearance.
const ORDER: &[&str] = &[
    "insert_1_client",
    "insert_8_clients",
    "insert_16_clients",
    "insert_32_clients",
    "burn_down_1_process",
    "burn_down_2_processes",
    "burn_down_4_processes",
    "db_cpu_per_1000_1_process",
    "db_cpu_per_1000_2_processes",
    "db_cpu_per_1000_4_processes",
    "worker_cpu_per_1000_1_process",
    "worker_cpu_per_1000_2_processes",
    "worker_cpu_per_1000_4_processes",
    "spawn_single",
    "spawn_batch",
    "start_listen_p50",
    "start_listen_p99",
    "start_poll_p50",
    "start_poll_p99",
    "step_fresh_p50",
    "step_fresh_mean",
    "replay_100_cached",
    "checkpoint_1mb",
    "steps_per_second",
    "sleep_wake_p50",
    "sleep_wake_max",
    "event_wake_p50",
    "event_wake_max",
    "long_run_tasks",
    "long_run_throughput",
    "worker_rss_ready",
    "worker_rss_warm",
    "worker_rss_end",
];

/// The rows of the table: label, unit, memory, sqlx, native, reference, target.
fn rows(measurements: &[Measurement]) -> Vec<[String; 7]> {
    let mut order: Vec<&str> = Vec::new();
    for m in measurements {
        if !order.contains(&m.scenario.as_str()) {
            order.push(&m.scenario);
        }
    }
    let rank = |scenario: &str| {
        ORDER
            .iter()
            .position(|s| *s == scenario)
            .unwrap_or(ORDER.len())
    };
    order.sort_by_key(|scenario| rank(scenario));
    order
        .into_iter()
        .map(|scenario| {
            let ms: Vec<&Measurement> = measurements
                .iter()
                .filter(|m| m.scenario == scenario)
                .collect();
            let (text, target) = describe(scenario);
            let label = if text.is_empty() { scenario } else { text };
            let cell = |backend: &str| {
                ms.iter()
                    .find(|m| m.backend == backend)
                    .map(|m| match m.reference {
                        Some(reference) if reference > 0.0 => {
                            format!("{} ({:.2}x)", format_value(m.value), m.value / reference)
                        }
                        _ => format_value(m.value),
                    })
                    .unwrap_or_default()
            };
            let reference = ms
                .iter()
                .find_map(|m| m.reference)
                .or_else(|| ms.iter().find(|m| m.backend == "postgres").map(|m| m.value))
                .map(format_value)
                .unwrap_or_default();
            [
                label.to_owned(),
                ms.first().map_or("", |m| m.unit.as_str()).to_owned(),
                cell("memory"),
                cell("sqlx"),
                cell("native"),
                reference,
                target.unwrap_or("").to_owned(),
            ]
        })
        .collect()
}

/// The table: one row per scenario, one column per backend; a figure with a reference shows
/// its ratio to it, and the reference column the PostgreSQL figure itself.
pub(crate) fn table(measurements: &[Measurement]) -> String {
    let mut out = String::new();
    let line = |cells: &[&str]| {
        format!(
            "{:<44} {:>9} {:>16} {:>16} {:>16} {:>10} {:>9}",
            cells[0], cells[1], cells[2], cells[3], cells[4], cells[5], cells[6]
        )
    };
    let header = line(&[
        "scenario",
        "unit",
        "memory",
        "sqlx",
        "native",
        "reference",
        "target",
    ]);
    let _ = writeln!(out, "{header}");
    let _ = writeln!(out, "{}", "-".repeat(header.len()));
    for row in rows(measurements) {
        let cells: Vec<&str> = row.iter().map(String::as_str).collect();
        let _ = writeln!(out, "{}", line(&cells));
    }
    out
}

/// The same table in Markdown, for `docs/benchmarks.md`.
pub(crate) fn markdown(measurements: &[Measurement]) -> String {
    let mut out = String::from(
        "| scenario | unit | memory | sqlx | native | reference | target |\n|---|---|---:|---:|---:|---:|---|\n",
    );
    for row in rows(measurements) {
        let _ = writeln!(out, "| {} |", row.join(" | "));
    }
    out
}

fn find(measurements: &[Measurement], scenario: &str, backend: &str) -> Option<f64> {
    measurements
        .iter()
        .find(|m| m.scenario == scenario && m.backend == backend)
        .map(|m| m.value)
}

const COLORS: [(&str, &str); 3] = [
    ("memory", "#7f7f7f"),
    ("sqlx", "#1f77b4"),
    ("native", "#d62728"),
];

/// An SVG with two panels: burn-down throughput against worker processes, and latencies
/// (log scale).
pub(crate) fn svg(measurements: &[Measurement], title: &str) -> String {
    let mut s = String::new();
    let (width, height) = (960.0, 420.0);
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>"#,
        width / 2.0,
        escape(title)
    );
    throughput_panel(&mut s, measurements, 60.0, 50.0, 380.0, 300.0);
    latency_panel(&mut s, measurements, 540.0, 50.0, 400.0, 300.0);
    let _ = writeln!(s, "</svg>");
    s
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn throughput_panel(s: &mut String, ms: &[Measurement], x0: f64, y0: f64, w: f64, h: f64) {
    let procs = [
        (1.0, "burn_down_1_process", "insert_8_clients"),
        (2.0, "burn_down_2_processes", "insert_16_clients"),
        (4.0, "burn_down_4_processes", "insert_32_clients"),
    ];
    // The reference at the same client count: 8 connections per worker process.
    let reference: Vec<(f64, f64)> = procs
        .iter()
        .filter_map(|(p, _, insert)| find(ms, insert, "postgres").map(|v| (*p, v)))
        .collect();
    let mut max: f64 = 5000.0;
    for backend in ["sqlx", "native"] {
        for (_, scenario, _) in procs {
            if let Some(v) = find(ms, scenario, backend) {
                max = max.max(v);
            }
        }
    }
    for (_, r) in &reference {
        max = max.max(*r);
    }
    let max = nice_ceiling(max * 1.1);
    let x_of = |p: f64| x0 + (p - 1.0) / 3.0 * w;
    let y_of = |v: f64| y0 + h - v / max * h;
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle" font-size="13">Burn-down throughput (tasks/s) by worker processes</text>"#,
        x0 + w / 2.0,
        y0 - 10.0
    );
    axes(s, x0, y0, w, h);
    for i in 0..=5 {
        let v = max * f64::from(i) / 5.0;
        let y = y_of(v);
        let _ = writeln!(
            s,
            r##"<line x1="{x0}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#eee"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            x0 + w,
            x0 - 6.0,
            y + 4.0,
            format_value(v)
        );
    }
    for (p, _, _) in procs {
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{p}</text>"#,
            x_of(p),
            y0 + h + 16.0
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">worker processes (concurrency 64 each)</text>"#,
        x0 + w / 2.0,
        y0 + h + 34.0
    );
    let mut hline = |value: f64, label: &str, color: &str| {
        let y = y_of(value);
        let _ = writeln!(
            s,
            r#"<line x1="{x0}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="{color}" stroke-dasharray="5,4"/><text x="{:.1}" y="{:.1}" fill="{color}" text-anchor="end">{}</text>"#,
            x0 + w,
            x0 + w - 4.0,
            y - 4.0,
            escape(label)
        );
    };
    hline(5000.0, "target 5,000", "#2ca02c");
    if !reference.is_empty() {
        let path: Vec<String> = reference
            .iter()
            .map(|(p, v)| format!("{:.1},{:.1}", x_of(*p), y_of(*v)))
            .collect();
        let _ = writeln!(
            s,
            r##"<polyline points="{}" fill="none" stroke="#555" stroke-width="1.5" stroke-dasharray="5,4"/>"##,
            path.join(" ")
        );
        if let Some((p, v)) = reference.first() {
            let _ = writeln!(
                s,
                r##"<text x="{:.1}" y="{:.1}" fill="#555">PostgreSQL one-row INSERT commits, 8 clients per process</text>"##,
                x_of(*p) + 4.0,
                y_of(*v) + 16.0
            );
        }
    }
    let mut legend_y = y0 + 12.0;
    for (backend, color) in COLORS.iter().skip(1) {
        let points: Vec<(f64, f64)> = procs
            .iter()
            .filter_map(|(p, scenario, _)| find(ms, scenario, backend).map(|v| (x_of(*p), y_of(v))))
            .collect();
        if points.is_empty() {
            continue;
        }
        let path: Vec<String> = points
            .iter()
            .map(|(x, y)| format!("{x:.1},{y:.1}"))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"/>"#,
            path.join(" ")
        );
        for (x, y) in &points {
            let _ = writeln!(
                s,
                r#"<circle cx="{x:.1}" cy="{y:.1}" r="3.5" fill="{color}"/>"#
            );
        }
        let _ = writeln!(
            s,
            r#"<rect x="{:.1}" y="{:.1}" width="12" height="3" fill="{color}"/><text x="{:.1}" y="{:.1}">{backend}</text>"#,
            x0 + 10.0,
            legend_y - 4.0,
            x0 + 26.0,
            legend_y
        );
        legend_y += 16.0;
    }
}

fn latency_panel(s: &mut String, ms: &[Measurement], x0: f64, y0: f64, w: f64, h: f64) {
    let groups = [
        ("start_listen_p50", "start p50"),
        ("start_listen_p99", "start p99"),
        ("start_poll_p50", "poll p50"),
        ("start_poll_p99", "poll p99"),
        ("step_fresh_p50", "step p50"),
        ("sleep_wake_p50", "sleep p50"),
        ("event_wake_p50", "event p50"),
    ];
    let (lo, hi) = (0.001f64, 1000.0f64);
    let y_of = |v: f64| {
        let v = v.clamp(lo, hi);
        y0 + h - (v.log10() - lo.log10()) / (hi.log10() - lo.log10()) * h
    };
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle" font-size="13">Latencies (ms, log scale)</text>"#,
        x0 + w / 2.0,
        y0 - 10.0
    );
    axes(s, x0, y0, w, h);
    let mut tick = lo;
    while tick <= hi * 1.0001 {
        let y = y_of(tick);
        let _ = writeln!(
            s,
            r##"<line x1="{x0}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#eee"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            x0 + w,
            x0 - 6.0,
            y + 4.0,
            format_value(tick)
        );
        tick *= 10.0;
    }
    let group_w = w / groups.len() as f64;
    let bar_w = group_w / 4.0;
    for (g, (scenario, label)) in groups.iter().enumerate() {
        let gx = x0 + g as f64 * group_w;
        for (b, (backend, color)) in COLORS.iter().enumerate() {
            if let Some(v) = find(ms, scenario, backend) {
                let y = y_of(v);
                let _ = writeln!(
                    s,
                    r#"<rect x="{:.1}" y="{y:.1}" width="{bar_w:.1}" height="{:.1}" fill="{color}"><title>{backend} {label}: {v:.3} ms</title></rect>"#,
                    gx + bar_w * (0.5 + b as f64),
                    (y0 + h - y).max(0.5)
                );
                let _ = writeln!(
                    s,
                    r#"<text x="{:.1}" y="{:.1}" font-size="8" text-anchor="middle">{}</text>"#,
                    gx + bar_w * (1.0 + b as f64),
                    y - 3.0,
                    format_value(v)
                );
            }
        }
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="11">{label}</text>"#,
            gx + group_w / 2.0,
            y0 + h + 16.0
        );
    }
    let mut legend_x = x0 + 10.0;
    for (backend, color) in COLORS {
        let _ = writeln!(
            s,
            r#"<rect x="{legend_x:.1}" y="{:.1}" width="10" height="10" fill="{color}"/><text x="{:.1}" y="{:.1}">{backend}</text>"#,
            y0 + h + 26.0,
            legend_x + 14.0,
            y0 + h + 35.0
        );
        legend_x += 80.0;
    }
}

fn axes(s: &mut String, x0: f64, y0: f64, w: f64, h: f64) {
    let _ = writeln!(
        s,
        r#"<line x1="{x0}" y1="{y0}" x2="{x0}" y2="{:.1}" stroke="black"/><line x1="{x0}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="black"/>"#,
        y0 + h,
        y0 + h,
        x0 + w,
        y0 + h
    );
}

/// A round number at or above `value`: 1, 2 or 5 times a power of ten.
fn nice_ceiling(value: f64) -> f64 {
    if value <= 0.0 {
        return 1.0;
    }
    let power = 10f64.powf(value.log10().floor());
    for step in [1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0] {
        if step * power >= value {
            return step * power;
        }
    }
    10.0 * power
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_readable() {
        assert_eq!(format_value(12345.6), "12,346");
        assert_eq!(format_value(0.4567), "0.457");
        assert_eq!(format_value(12.34), "12.3");
        assert_eq!(nice_ceiling(5500.0), 6000.0);
        assert_eq!(nice_ceiling(23565.0), 25000.0);
        assert_eq!(format_value(0.0), "0");
        assert_eq!(nice_ceiling(1800.0), 2000.0);
    }

    #[test]
    fn json_lines_have_the_five_keys() {
        let m = Measurement::new("spawn_single", "sqlx", 1.5, "spawns/s").with_reference(Some(3.0));
        let value: serde_json::Value = serde_json::from_str(&m.json_line()).unwrap_or_default();
        for key in ["scenario", "backend", "value", "unit", "reference"] {
            assert!(value.get(key).is_some(), "{key}");
        }
    }
}
