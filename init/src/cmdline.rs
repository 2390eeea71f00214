//! Splitting a kernel command line into parameters, with the kernel's own
//! quoting rules (`next_arg()` in lib/cmdline.c), so that what the init reads
//! is what the kernel read:
//!
//! - parameters are separated by whitespace outside double quotes;
//! - a `"` anywhere toggles quoting, so `a="b c"` and `"a=b c"` are one
//!   parameter;
//! - the first `=` splits name from value;
//! - one pair of quotes around the whole parameter, or around the value, is
//!   removed; any other quote characters stay.
//!
//! The tokenizer never fails: every byte sequence splits into parameters.

/// One `name[=value]` parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    pub name: String,
    /// `None` for a bare flag (`quiet`), `Some("")` for `name=`.
    pub value: Option<String>,
}

/// Splits `line` into parameters. Invalid UTF-8 is replaced (U+FFFD) so the
/// init can still name the offending parameter.
pub fn split(line: &[u8]) -> Vec<Param> {
    let line = String::from_utf8_lossy(line);
    let bytes = line.as_bytes();
    let mut params = Vec::new();
    let mut i = skip_spaces(bytes, 0);
    while i < bytes.len() {
        let (param, next) = next_arg(&line, i);
        params.push(param);
        i = skip_spaces(bytes, next);
    }
    params
}

/// The kernel's `isspace()` for the command line: space, \t, \n, \v, \f, \r.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

fn skip_spaces(bytes: &[u8], mut i: usize) -> usize {
    while i < bytes.len() && is_space(bytes[i]) {
        i += 1;
    }
    i
}

/// Reads one parameter starting at `start` (not a space); returns it and the
/// index just past its terminating space (or the end).
fn next_arg(line: &str, start: usize) -> (Param, usize) {
    let bytes = line.as_bytes();
    let mut begin = start;
    let mut in_quote = false;
    let mut quoted = false;
    if bytes[begin] == b'"' {
        begin += 1;
        in_quote = true;
        quoted = true;
    }
    let mut equals = None;
    let mut end = begin;
    while end < bytes.len() {
        let b = bytes[end];
        if is_space(b) && !in_quote {
            break;
        }
        if equals.is_none() && b == b'=' {
            equals = Some(end);
        }
        if b == b'"' {
            in_quote = !in_quote;
        }
        end += 1;
    }
    let next = if end < bytes.len() { end + 1 } else { end };
    // All indices below sit on ASCII bytes (`"`, `=`, whitespace) or at the
    // ends of the string, so slicing the &str cannot split a UTF-8 sequence.
    let mut name_end = equals.unwrap_or(end);
    let mut value = None;
    if let Some(eq) = equals {
        let mut v_begin = eq + 1;
        let mut v_end = end;
        if bytes.get(v_begin) == Some(&b'"') {
            v_begin += 1;
            if v_end > v_begin && bytes[v_end - 1] == b'"' {
                v_end -= 1;
            }
        }
        if quoted && v_end == end && v_end > v_begin && bytes[v_end - 1] == b'"' {
            v_end -= 1;
        }
        value = Some(line[v_begin..v_end.max(v_begin)].to_owned());
    } else if quoted && name_end > begin && bytes[name_end - 1] == b'"' {
        name_end -= 1;
    }
    let param = Param {
        name: line[begin..name_end].to_owned(),
        value,
    };
    (param, next)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(name: &str, value: Option<&str>) -> Param {
        Param {
            name: name.into(),
            value: value.map(Into::into),
        }
    }

    #[test]
    fn splits_like_the_kernel() {
        let table: &[(&str, &[Param])] = &[
            ("", &[]),
            ("   \t\n ", &[]),
            ("quiet", &[p("quiet", None)]),
            (
                "a=1 b= c",
                &[p("a", Some("1")), p("b", Some("")), p("c", None)],
            ),
            (
                "  console=ttyS0   ro  ",
                &[p("console", Some("ttyS0")), p("ro", None)],
            ),
            // Quotes around the value are removed, spaces inside kept.
            (r#"x="a b" y"#, &[p("x", Some("a b")), p("y", None)]),
            // Quotes around the whole parameter are removed.
            (r#""x=a b" y"#, &[p("x", Some("a b")), p("y", None)]),
            (r#""flag with space""#, &[p("flag with space", None)]),
            // Only the first = splits; later ones belong to the value.
            ("root=UUID=1234-ab", &[p("root", Some("UUID=1234-ab"))]),
            // A quote in the middle toggles quoting but stays in the value.
            (
                r#"a=b"c d"e f"#,
                &[p("a", Some(r#"b"c d"e"#)), p("f", None)],
            ),
            // An unterminated quote runs to the end of the line.
            (r#"a="b c"#, &[p("a", Some("b c"))]),
            (r#"""#, &[p("", None)]),
            ("=v", &[p("", Some("v"))]),
            (
                "phase.provider=http://10.0.2.2:8080/,https://m.example/x",
                &[p(
                    "phase.provider",
                    Some("http://10.0.2.2:8080/,https://m.example/x"),
                )],
            ),
            (
                "a\u{e9}=\u{fc} b",
                &[p("a\u{e9}", Some("\u{fc}")), p("b", None)],
            ),
            (
                "-- init-arg x=y",
                &[p("--", None), p("init-arg", None), p("x", Some("y"))],
            ),
        ];
        for (line, want) in table {
            assert_eq!(split(line.as_bytes()), *want, "line {line:?}");
        }
    }

    #[test]
    fn invalid_utf8_is_replaced_not_rejected() {
        assert_eq!(split(b"a=\xff b"), [p("a", Some("\u{fffd}")), p("b", None)]);
    }
}
