//! The durations of the steps of one operation (a container's `up`, an agent's forced cycle),
//! logged as one line at `info`: `total 21.4 ms: guard 3.1, cni_add 7.0, ...` (milliseconds).
//! Benches read the line back with [`parse`] for their per-step breakdown.

use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct Steps {
    started: Instant,
    last: Instant,
    done: Vec<(&'static str, Duration)>,
}

impl Default for Steps {
    fn default() -> Steps {
        Steps::start()
    }
}

impl Steps {
    pub fn start() -> Steps {
        let now = Instant::now();
        Steps {
            started: now,
            last: now,
            done: Vec::new(),
        }
    }

    /// Ends the step running since the last mark (or the start), naming it.
    pub fn mark(&mut self, name: &'static str) {
        let now = Instant::now();
        self.add(name, now - self.last);
        self.last = now;
    }

    /// Records a step timed elsewhere (e.g. on another thread); a name seen before adds up.
    pub fn add(&mut self, name: &'static str, took: Duration) {
        match self.done.iter_mut().find(|(n, _)| *n == name) {
            Some((_, d)) => *d += took,
            None => self.done.push((name, took)),
        }
    }

    /// Restarts the running step's clock (time since the last mark is dropped).
    pub fn skip(&mut self) {
        self.last = Instant::now();
    }

    pub fn get(&self, name: &str) -> Option<Duration> {
        self.done.iter().find(|(n, _)| *n == name).map(|(_, d)| *d)
    }

    /// `total T ms: a 1.0, b 2.5`.
    pub fn line(&self) -> String {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let parts: Vec<String> = self
            .done
            .iter()
            .map(|(n, d)| format!("{n} {:.2}", ms(*d)))
            .collect();
        format!(
            "total {:.2} ms: {}",
            ms(self.started.elapsed()),
            parts.join(", ")
        )
    }
}

/// The steps of a [`Steps::line`] found in `text` (a log line), in milliseconds, `total`
/// first; `None` when `text` holds no such line.
pub fn parse(text: &str) -> Option<Vec<(String, f64)>> {
    let at = text.find("total ")?;
    let (total, rest) = text[at + "total ".len()..].split_once(" ms: ")?;
    let mut out = vec![("total".to_string(), total.trim().parse().ok()?)];
    for part in rest.trim_end_matches(['"', '}', '\n']).split(", ") {
        let (name, v) = part.trim().rsplit_once(' ')?;
        out.push((name.to_string(), v.parse().ok()?));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_parses_back_into_its_steps() {
        let mut s = Steps::start();
        s.add("cni_add", Duration::from_micros(7250));
        s.add("rules", Duration::from_millis(3));
        s.add("cni_add", Duration::from_micros(250));
        let line = format!("up h1: {}", s.line());
        let parsed = parse(&line).unwrap();
        assert_eq!(parsed[0].0, "total");
        assert_eq!(
            parsed[1..],
            [("cni_add".to_string(), 7.5), ("rules".to_string(), 3.0)]
        );
        assert_eq!(s.get("rules"), Some(Duration::from_millis(3)));
        assert!(parse("up h1: nothing timed here").is_none());
        assert!(parse("total x ms: a 1").is_none());
    }
}
