//! Splitting a kernel command line into parameters exactly as the kernel
//! does (`next_arg()` in lib/cmdline.c), so that what the init reads is what
//! the kernel read:
//!
//! - parameters are separated by the kernel's `isspace()` bytes outside
//!   double quotes: 0x09–0x0d, 0x20 and 0xa0 (lib/ctype.c marks Latin-1's
//!   no-break space as space). The split is on bytes, before any UTF-8
//!   decoding, so a U+00A0 (`c2 a0`) or an `à` (`c3 a0`) splits a parameter
//!   for the kernel, and so here;
//! - a `"` anywhere toggles quoting, so `a="b c"` and `"a=b c"` are one
//!   parameter;
//! - the first `=` not at the very start splits name from value (the
//!   kernel takes an `=` at offset 0 as part of the name);
//! - a quote opening the value is removed, and then a quote ending the
//!   parameter; a quote opening the whole parameter is removed, and then a
//!   quote ending it; any other quote characters stay;
//! - the line ends at its first NUL, as the kernel's C string does.
//!
//! Name and value are decoded as UTF-8 after the split; invalid sequences
//! (such as the `c3` left of a split `à`) become U+FFFD, so the init can
//! still name the parameter. Everything after `--` is split too: the kernel
//! hands those words to init, and they stay visible in /proc/cmdline.
//!
//! The tokenizer never fails: every byte sequence splits into parameters.

/// One `name[=value]` parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    pub name: String,
    /// `None` for a bare flag (`quiet`), `Some("")` for `name=`.
    pub value: Option<String>,
}

/// Splits `line` into parameters.
pub fn split(line: &[u8]) -> Vec<Param> {
    let line = &line[..line.iter().position(|&b| b == 0).unwrap_or(line.len())];
    let mut params = Vec::new();
    let mut i = skip_spaces(line, 0);
    while i < line.len() {
        let (param, next) = next_arg(line, i);
        params.push(param);
        i = skip_spaces(line, next);
    }
    params
}

/// The kernel's `isspace()`: the bytes lib/ctype.c's `_ctype` marks `_S`.
pub fn is_space(b: u8) -> bool {
    matches!(b, 0x09..=0x0d | 0x20 | 0xa0)
}

fn skip_spaces(bytes: &[u8], mut i: usize) -> usize {
    while i < bytes.len() && is_space(bytes[i]) {
        i += 1;
    }
    i
}

/// Reads one parameter starting at `start` (not a space, before the end);
/// returns it and the index just past its terminating space (or the end).
///
/// The kernel cuts its copy of the line with NUL bytes (after the name, and
/// where a closing quote was); here the same cuts are the ends of slices.
fn next_arg(line: &[u8], start: usize) -> (Param, usize) {
    let mut begin = start;
    let mut in_quote = false;
    let mut quoted = false;
    if line.get(begin) == Some(&b'"') {
        begin += 1;
        in_quote = true;
        quoted = true;
    }
    let arg = &line[begin..];
    // `equals` is 0 for "none", as in the kernel: an `=` at offset 0 does not
    // count, and a later one still may.
    let mut equals = 0;
    let mut end = 0;
    while end < arg.len() {
        let b = arg[end];
        if is_space(b) && !in_quote {
            break;
        }
        if equals == 0 && b == b'=' {
            equals = end;
        }
        if b == b'"' {
            in_quote = !in_quote;
        }
        end += 1;
    }
    // Where the kernel writes a NUL at end - 1 (a closing quote).
    let mut cut_last = false;
    let mut value_begin = None;
    if equals != 0 {
        let mut v = equals + 1;
        // `v < end`: at `end` there is a space or the end of the line.
        if v < end && arg[v] == b'"' {
            v += 1;
            cut_last = arg[end - 1] == b'"';
        }
        value_begin = Some(v);
    }
    // Not when the cut above already removed that quote.
    if quoted && end > 0 && arg[end - 1] == b'"' {
        cut_last = true;
    }
    // The first cut at or after `from` ends a string there.
    let string_end = |from: usize| {
        if cut_last && end > 0 && from < end {
            end - 1
        } else {
            end
        }
        .max(from)
    };
    let name_end = if equals != 0 { equals } else { string_end(0) };
    let param = Param {
        name: String::from_utf8_lossy(&arg[..name_end]).into_owned(),
        value: value_begin.map(|v| String::from_utf8_lossy(&arg[v..string_end(v)]).into_owned()),
    };
    let next = begin + if end < arg.len() { end + 1 } else { end };
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
            // An `=` at offset 0 is part of the name; a later one splits.
            ("=v", &[p("=v", None)]),
            ("=a=b", &[p("=a", Some("b"))]),
            // The kernel's spaces include 0xa0, inside UTF-8 too: a no-break
            // space (c2 a0) and an à (c3 a0) end a parameter.
            (
                "a=x\u{a0}b=y",
                &[p("a", Some("x\u{fffd}")), p("b", Some("y"))],
            ),
            (
                "phase.channel=voil\u{e0} quiet",
                &[p("phase.channel", Some("voil\u{fffd}")), p("quiet", None)],
            ),
            ("x\u{b}y\u{c}z", &[p("x", None), p("y", None), p("z", None)]),
            // Quotes keep 0xa0 inside a parameter, as any other space.
            ("a=\"\u{e0} b\"", &[p("a", Some("\u{e0} b"))]),
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
        assert_eq!(split(b"a b\0c d"), [p("a", None), p("b", None)]);
    }

    /// The kernel's parsing, ported statement by statement from
    /// lib/cmdline.c (`next_arg`), lib/string.c (`skip_spaces`), lib/ctype.c
    /// (`isspace`) and the loop of kernel/params.c (`parse_args`), on a
    /// NUL-terminated copy of the line that it cuts with NULs as the C does.
    mod kernel {
        /// `_ctype[c] & _S`, from the table: 9–13 are `_C|_S`, 32 and 160
        /// are `_S|_SP`; nothing else has `_S`.
        const CTYPE_S: [bool; 256] = {
            let mut t = [false; 256];
            t[9] = true;
            t[10] = true;
            t[11] = true;
            t[12] = true;
            t[13] = true;
            t[32] = true;
            t[160] = true;
            t
        };

        fn isspace(c: u8) -> bool {
            CTYPE_S[c as usize]
        }

        fn skip_spaces(buf: &[u8], mut str: usize) -> usize {
            while isspace(buf[str]) {
                str += 1;
            }
            str
        }

        /// Returns (param, val, the next args) as offsets into `buf`.
        fn next_arg(buf: &mut [u8], mut args: usize) -> (usize, Option<usize>, usize) {
            let mut i: usize = 0;
            let mut equals: usize = 0;
            let mut in_quote = false;
            let mut quoted = false;
            if buf[args] == b'"' {
                args += 1;
                in_quote = true;
                quoted = true;
            }
            while buf[args + i] != 0 {
                if isspace(buf[args + i]) && !in_quote {
                    break;
                }
                if equals == 0 && buf[args + i] == b'=' {
                    equals = i;
                }
                if buf[args + i] == b'"' {
                    in_quote = !in_quote;
                }
                i += 1;
            }
            let param = args;
            let mut val = None;
            if equals != 0 {
                buf[args + equals] = 0;
                let mut v = args + equals + 1;
                if buf[v] == b'"' {
                    v += 1;
                    if buf[args + i - 1] == b'"' {
                        buf[args + i - 1] = 0;
                    }
                }
                val = Some(v);
            }
            if quoted && i > 0 && buf[args + i - 1] == b'"' {
                buf[args + i - 1] = 0;
            }
            if buf[args + i] != 0 {
                buf[args + i] = 0;
                args += i + 1;
            } else {
                args += i;
            }
            (param, val, skip_spaces(buf, args))
        }

        fn c_str(buf: &[u8], at: usize) -> String {
            let len = buf[at..].iter().position(|&b| b == 0).unwrap();
            String::from_utf8_lossy(&buf[at..at + len]).into_owned()
        }

        /// `parse_args` without its handling of `--`, which is the
        /// kernel's business, not the tokenizer's.
        pub fn parse(line: &[u8]) -> Vec<(String, Option<String>)> {
            let mut buf = line.to_vec();
            buf.push(0);
            let mut out = Vec::new();
            let mut args = skip_spaces(&buf, 0);
            while buf[args] != 0 {
                let (param, val, next) = next_arg(&mut buf, args);
                out.push((c_str(&buf, param), val.map(|v| c_str(&buf, v))));
                args = next;
            }
            out
        }
    }

    fn ours(line: &[u8]) -> Vec<(String, Option<String>)> {
        split(line).into_iter().map(|p| (p.name, p.value)).collect()
    }

    #[test]
    fn is_space_is_the_kernels_table() {
        let spaces: Vec<u8> = (0..=255u8).filter(|&b| is_space(b)).collect();
        assert_eq!(spaces, [0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x20, 0xa0]);
    }

    #[test]
    fn splits_as_the_kernels_next_arg_on_generated_lines() {
        // Bytes that matter to the kernel's rules, a UTF-8 lead byte whose
        // continuation can be 0xa0, and plain letters.
        const ALPHABET: &[u8] = &[
            b' ', b'\t', b'\n', 0x0b, 0x0c, b'\r', 0xa0, 0x85, 0xc2, 0xc3, 0xe2, 0x80, 0xff, b'"',
            b'"', b'=', b'=', b'a', b'b', b'.', b'-', 0x00,
        ];
        let mut x: u64 = 0x0c3d_11e5_eed0_0001;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for case in 0..50_000 {
            let len = (next() % 24) as usize;
            let line: Vec<u8> = (0..len)
                .map(|_| ALPHABET[(next() % ALPHABET.len() as u64) as usize])
                .collect();
            assert_eq!(
                ours(&line),
                kernel::parse(&line),
                "case {case}: line {line:02x?}"
            );
        }
        // And the hand-written cases above, and real command lines.
        for line in [
            &b"console=ttyS0 phase.provider=http://10.0.2.2:8080/ root=\"LABEL=my root\" quiet"[..],
            b"\"=\"=\"",
            b"a=\"\"",
            b"\"a\"=\"b\"",
            b"\"\"\"",
            b"x=\xc3\xa0\xc2\xa0y",
        ] {
            assert_eq!(ours(line), kernel::parse(line), "{line:02x?}");
        }
    }
}
