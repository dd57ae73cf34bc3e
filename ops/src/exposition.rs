//! Prometheus' text exposition format (version 0.0.4): `# HELP` and `# TYPE` lines, then one
//! sample a line, label values escaped.
//!
//! Written by hand: the format is a few lines of text, and the `prometheus` crates bring a
//! registry of their own with locks on every update, where the programs here keep plain
//! counters and render them only when scraped.

use std::fmt::Write as _;

use crate::histogram::{Histogram, BOUNDS};

/// The `Content-Type` of a page in this format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What kind of figure a family of samples is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only ever goes up (until the process restarts); its name ends in `_total`.
    Counter,
    /// Goes up and down.
    Gauge,
    /// Observations counted into buckets, with their sum and count.
    Histogram,
}

/// A page of metrics being written.
#[derive(Debug, Default)]
pub struct Exposition {
    /// The text so far.
    text: String,
}

impl Exposition {
    /// An empty page.
    pub fn new() -> Exposition {
        Exposition::default()
    }

    /// Starts a family: its help and type lines. Every sample of the family must follow
    /// before the next family starts.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) {
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        };
        let _ = write!(self.text, "# HELP {name} ");
        escape_into(&mut self.text, help, false);
        let _ = writeln!(self.text, "\n# TYPE {name} {kind}");
    }

    /// One sample of the family last started: `name{labels} value`.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.text.push_str(name);
        write_labels(&mut self.text, labels, None);
        self.text.push(' ');
        write_value(&mut self.text, value);
        self.text.push('\n');
    }

    /// A counter family with one sample and no labels.
    pub fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.family(name, Kind::Counter, help);
        self.sample(name, &[], value as f64);
    }

    /// A gauge family with one sample and no labels.
    pub fn gauge(&mut self, name: &str, help: &str, value: f64) {
        self.family(name, Kind::Gauge, help);
        self.sample(name, &[], value);
    }

    /// A histogram family with one histogram and no labels.
    pub fn histogram(&mut self, name: &str, help: &str, histogram: &Histogram) {
        self.family(name, Kind::Histogram, help);
        self.histogram_sample(name, &[], histogram);
    }

    /// One histogram of the family last started: its cumulative buckets, sum and count.
    pub fn histogram_sample(&mut self, name: &str, labels: &[(&str, &str)], histogram: &Histogram) {
        let mut below = 0;
        let bucket = format!("{name}_bucket");
        for (bound, count) in BOUNDS.iter().zip(histogram.buckets()) {
            below += count;
            self.text.push_str(&bucket);
            write_labels(&mut self.text, labels, Some(*bound));
            let _ = writeln!(self.text, " {below}");
        }
        self.text.push_str(&bucket);
        write_labels(&mut self.text, labels, Some(f64::INFINITY));
        let _ = writeln!(self.text, " {}", histogram.count());
        self.sample(&format!("{name}_sum"), labels, histogram.sum_seconds());
        self.sample(&format!("{name}_count"), labels, histogram.count() as f64);
    }

    /// The page.
    pub fn into_string(self) -> String {
        self.text
    }
}

/// `{a="x",b="y"}`, with `le` last when given; nothing when there are no labels at all.
fn write_labels(text: &mut String, labels: &[(&str, &str)], le: Option<f64>) {
    if labels.is_empty() && le.is_none() {
        return;
    }
    text.push('{');
    for (i, (name, value)) in labels.iter().enumerate() {
        if i > 0 {
            text.push(',');
        }
        let _ = write!(text, "{name}=\"");
        escape_into(text, value, true);
        text.push('"');
    }
    if let Some(le) = le {
        if !labels.is_empty() {
            text.push(',');
        }
        text.push_str("le=\"");
        write_value(text, le);
        text.push('"');
    }
    text.push('}');
}

/// Escapes a backslash and a line feed, and in a label value a double quote too, as the format
/// asks.
fn escape_into(text: &mut String, value: &str, quote: bool) {
    for c in value.chars() {
        match c {
            '\\' => text.push_str("\\\\"),
            '\n' => text.push_str("\\n"),
            '"' if quote => text.push_str("\\\""),
            c => text.push(c),
        }
    }
}

/// A float as the format spells it: `+Inf`, `-Inf`, `NaN`, and whole numbers without a
/// fraction.
fn write_value(text: &mut String, value: f64) {
    if value.is_nan() {
        text.push_str("NaN");
    } else if value.is_infinite() {
        text.push_str(if value > 0.0 { "+Inf" } else { "-Inf" });
    } else if value.fract() == 0.0 && value.abs() < 1e15 {
        let _ = write!(text, "{}", value as i64);
    } else {
        let _ = write!(text, "{value}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn families_samples_and_escapes_are_written_as_the_format_says() {
        let mut page = Exposition::new();
        page.counter("x_requests_total", "Requests.\nAll of them \\ each.", 3);
        page.family("x_topic_bytes", Kind::Gauge, "Bytes by topic.");
        page.sample("x_topic_bytes", &[("topic", "a\"b\\c\nd")], 1.5);
        let text = page.into_string();
        assert_eq!(
            text,
            "# HELP x_requests_total Requests.\\nAll of them \\\\ each.\n\
             # TYPE x_requests_total counter\n\
             x_requests_total 3\n\
             # HELP x_topic_bytes Bytes by topic.\n\
             # TYPE x_topic_bytes gauge\n\
             x_topic_bytes{topic=\"a\\\"b\\\\c\\nd\"} 1.5\n"
        );
    }

    #[test]
    fn a_histogram_has_cumulative_buckets_ending_in_inf_then_sum_and_count() {
        let mut histogram = Histogram::default();
        histogram.observe(Duration::from_micros(50));
        histogram.observe(Duration::from_millis(3));
        histogram.observe(Duration::from_secs(100));
        let mut page = Exposition::new();
        page.histogram("x_commit_seconds", "Commits.", &histogram);
        let text = page.into_string();
        assert!(text.contains("x_commit_seconds_bucket{le=\"0.0001\"} 1\n"), "{text}");
        assert!(text.contains("x_commit_seconds_bucket{le=\"0.005\"} 2\n"), "{text}");
        assert!(text.contains("x_commit_seconds_bucket{le=\"10\"} 2\n"), "{text}");
        assert!(text.contains("x_commit_seconds_bucket{le=\"+Inf\"} 3\n"), "{text}");
        assert!(text.contains("x_commit_seconds_count 3\n"), "{text}");
        assert!(text.contains("x_commit_seconds_sum 100.00305\n"), "{text}");
    }
}
