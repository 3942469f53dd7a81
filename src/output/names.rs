//! Output file names from a template: `{model}`, `{seed}`, `{index}`, `{time}`.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use super::OutputError;

// ---------------------------------------------------------------------------------------------

/// The values a name template can use.
#[derive(Clone, Debug)]
pub struct NameVars {
    /// `{model}`: the model's name (a file stem, no `/`).
    pub model: String,
    /// `{seed}`: the generation seed.
    pub seed: u64,
    /// `{index}`: the output's number within the run.
    pub index: u64,
    /// `{time}`: when the output was made, written in UTC as `YYYYMMDDTHHMMSSZ`.
    pub time: SystemTime,
}

/// Expands a file-name template: `{model}`, `{seed}`, `{index}`, `{time}`; numbers take an
/// optional zero pad (`{index:04}`, `{seed:08}`); `{{` and `}}` are literal braces. An unknown
/// placeholder is an error, and so is a result that is not a plain file name (empty, `.`, `..`,
/// or containing `/` or NUL).
pub fn expand_name(template: &str, vars: &NameVars) -> Result<String, OutputError> {
    let bad = |reason: String| OutputError::BadTemplate { template: template.to_owned(), reason };
    let mut out = String::with_capacity(template.len() + 16);
    let mut rest = template;
    while let Some(pos) = rest.find(['{', '}']) {
        out.push_str(&rest[..pos]);
        let brace = &rest[pos..pos + 1];
        let after = &rest[pos + 1..];
        if after.starts_with(brace) {
            out.push_str(brace);
            rest = &after[1..];
            continue;
        }
        if brace == "}" {
            return Err(bad("a '}' without a matching '{' (write '}}' for a literal brace)".into()));
        }
        let end = after
            .find(['}', '{'])
            .filter(|&e| after.as_bytes()[e] == b'}')
            .ok_or_else(|| bad("a '{' without a closing '}' (write '{{' for a literal brace)".into()))?;
        let inner = &after[..end];
        let (name, spec) = match inner.split_once(':') {
            Some((n, s)) => (n, Some(s)),
            None => (inner, None),
        };
        let number = match name {
            "seed" => Some(vars.seed),
            "index" => Some(vars.index),
            _ => None,
        };
        match (name, number, spec) {
            (_, Some(v), None) => {
                let _ = write!(out, "{v}");
            }
            (_, Some(v), Some(spec)) => {
                let width = zero_pad_width(spec)
                    .ok_or_else(|| bad(format!("{{{inner}}} has format '{spec}'; the only format is a zero pad such as {{{name}:04}}")))?;
                let _ = write!(out, "{v:0width$}");
            }
            ("model" | "time", _, Some(spec)) => {
                return Err(bad(format!("{{{name}}} takes no format, got ':{spec}'")));
            }
            ("model", _, None) => out.push_str(&vars.model),
            ("time", _, None) => out.push_str(&utc_stamp(vars.time)),
            _ => return Err(OutputError::UnknownPlaceholder { name: inner.to_owned(), template: template.to_owned() }),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    let reason = if out.is_empty() {
        Some("is empty")
    } else if out.contains('/') {
        Some("contains '/'")
    } else if out.contains('\0') {
        Some("contains a NUL character")
    } else if out == "." || out == ".." {
        Some("is not a file name")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(OutputError::BadName { template: template.to_owned(), name: out, reason }),
        None => Ok(out),
    }
}

/// `0N` with 1 <= N <= 64 -> N.
fn zero_pad_width(spec: &str) -> Option<usize> {
    let digits = spec.strip_prefix('0')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|&w| (1..=64).contains(&w))
}

/// `t` in UTC as `YYYYMMDDTHHMMSSZ` (times before 1970 included; sub-seconds dropped).
fn utc_stamp(t: SystemTime) -> String {
    let secs: i64 = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        // Before the epoch: round down to the whole second.
        Err(e) => {
            let d = e.duration();
            let s = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
            -s - i64::from(d.subsec_nanos() > 0)
        }
    };
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z", sod / 3600, sod / 60 % 60, sod % 60)
}

/// Proleptic Gregorian (year, month, day) of the day `days` after 1970-01-01
/// (Howard Hinnant's `civil_from_days`, <https://howardhinnant.github.io/date_algorithms.html>).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days.saturating_add(719_468);
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365], from March 1
    let mp = (5 * doy + 2) / 153; // [0, 11], March = 0
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn vars(time: SystemTime) -> NameVars {
        NameVars { model: "moons-dual".into(), seed: 42, index: 7, time }
    }

    #[test]
    fn name_templates_expand() {
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let v = vars(t);
        assert_eq!(expand_name("{model}-{seed}-{index:04}.png", &v).unwrap(), "moons-dual-42-0007.png");
        assert_eq!(expand_name("{index}_{seed:08}.csv", &v).unwrap(), "7_00000042.csv");
        assert_eq!(expand_name("{time}.png", &v).unwrap(), "20231114T221320Z.png");
        assert_eq!(expand_name("{{{model}}}", &v).unwrap(), "{moons-dual}");
        assert_eq!(expand_name("plain.png", &v).unwrap(), "plain.png");
        assert_eq!(expand_name("{index:01}", &NameVars { index: 1234, ..v.clone() }).unwrap(), "1234");
        assert_eq!(expand_name("ünï{index}", &v).unwrap(), "ünï7");
    }

    #[test]
    fn name_template_errors() {
        let v = vars(UNIX_EPOCH);
        let err = |t: &str| expand_name(t, &v).unwrap_err().to_string();
        let e = err("{model}-{steps}.png");
        assert!(e.starts_with("unknown placeholder {steps} in the name template \"{model}-{steps}.png\""), "{e}");
        assert!(err("{index:4}").contains("zero pad"));
        assert!(err("{index:}").contains("zero pad"));
        assert!(err("{index:0}").contains("zero pad"));
        assert!(err("{index:0x}").contains("zero pad"));
        assert!(err("{model:04}").contains("takes no format"));
        assert!(err("{model").contains("without a closing"));
        assert!(err("{mo{del}").contains("without a closing"));
        assert!(err("a}b").contains("without a matching"));
        assert!(err("").contains("is empty"));
        assert!(err("..").contains("not a file name"));
        assert!(err("out/{index}.png").contains("contains '/'"));
        let slash = NameVars { model: "models/moons".into(), ..v.clone() };
        let e = expand_name("{model}.png", &slash).unwrap_err().to_string();
        assert!(e.contains("gives \"models/moons.png\", which contains '/'"), "{e}");
        assert!(!e.contains('\n'));
    }

    #[test]
    fn utc_stamps_and_calendar() {
        let at = |s: i64| {
            if s >= 0 {
                UNIX_EPOCH + Duration::from_secs(s as u64)
            } else {
                UNIX_EPOCH - Duration::from_secs((-s) as u64)
            }
        };
        assert_eq!(utc_stamp(at(0)), "19700101T000000Z");
        assert_eq!(utc_stamp(at(-1)), "19691231T235959Z");
        assert_eq!(utc_stamp(UNIX_EPOCH - Duration::from_millis(1)), "19691231T235959Z");
        assert_eq!(utc_stamp(at(951_782_400)), "20000229T000000Z"); // leap day of a /400 year
        assert_eq!(utc_stamp(at(1_709_208_000)), "20240229T120000Z");
        assert_eq!(utc_stamp(at(4_102_444_799)), "20991231T235959Z");
        assert_eq!(utc_stamp(at(4_107_542_400)), "21000301T000000Z"); // 2100 is not a leap year
        assert_eq!(utc_stamp(at(253_402_300_799)), "99991231T235959Z");
        // Every day from 1900 to 2100 follows the previous one.
        let month_len = |y: i64, m: u32| match m {
            2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        };
        let mut prev = civil_from_days(-25_567); // 1900-01-01
        assert_eq!(prev, (1900, 1, 1));
        for day in -25_566..47_482 {
            let cur = civil_from_days(day);
            let want = if prev.2 < month_len(prev.0, prev.1) {
                (prev.0, prev.1, prev.2 + 1)
            } else if prev.1 < 12 {
                (prev.0, prev.1 + 1, 1)
            } else {
                (prev.0 + 1, 1, 1)
            };
            assert_eq!(cur, want, "day {day}");
            prev = cur;
        }
        assert_eq!(prev, (2099, 12, 31));
    }
}
