//! Durations as people write them (`500ms`, `30s`, `5m`, `1h`, or plain
//! seconds): `serve --idle-timeout` and a fleet file's `idle_timeout`.

use std::time::Duration;

/// A whole number above 0 with a unit; the error says what would do.
pub fn parse(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let scale = match unit.trim() {
        "ms" => Some(1),
        "" | "s" => Some(1_000),
        "m" | "min" => Some(60_000),
        "h" => Some(3_600_000),
        _ => None,
    };
    match (num.parse::<u64>(), scale) {
        (Ok(n), Some(scale)) if n > 0 => Ok(Duration::from_millis(n.saturating_mul(scale))),
        _ => Err(format!(
            "{text:?} is not a duration: give a whole number above 0 with a unit, such as \
             500ms, 30s, 5m or 1h"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse(" 5m "), Ok(Duration::from_secs(300)));
        assert_eq!(parse("1h"), Ok(Duration::from_secs(3600)));
    }

    #[test]
    fn refusals_say_what_would_do() {
        for bad in ["", "0s", "1.5s", "-1s", "10 parsecs", "ms"] {
            let e = parse(bad).unwrap_err();
            assert!(e.contains("such as 500ms"), "{bad}: {e}");
        }
    }
}
