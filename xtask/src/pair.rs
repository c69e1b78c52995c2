//! `cargo xtask pair`: two whole commands timed in alternation, A B A B …, with the ratio of
//! each pair, so that a comparison holds while a shared machine's speed drifts.
//!
//! Each run is one process, its wall time measured around it and its CPU time (user and
//! system, its children included) read from `wait4`'s accounting. The first pair is a warm-up
//! (file cache, CPU frequency) and is not counted unless `--warmup 0`.

use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::flag;

/// One finished run: wall, user and system seconds, and its exit status.
#[derive(Debug, Clone, Copy)]
struct Timing {
    wall: f64,
    user: f64,
    sys: f64,
    code: i32,
}

/// Parses `[-n N] [--warmup N] --vs 'B ...' -- A ...`.
fn parse(args: &[String]) -> Result<(usize, usize, Vec<String>, Vec<String>)> {
    let split = args
        .iter()
        .position(|a| a == "--")
        .context("`cargo xtask pair` needs `-- COMMAND` after its flags")?;
    let (flags, a) = (&args[..split], args[split + 1..].to_vec());
    if a.is_empty() {
        bail!("`cargo xtask pair`: no command after `--`");
    }
    let number = |name: &str, default: usize, max: usize| -> Result<usize> {
        match flag(flags, name)? {
            None => Ok(default),
            Some(v) => v
                .parse::<usize>()
                .ok()
                .filter(|n| *n <= max)
                .with_context(|| format!("{name} {v}: expected a whole number up to {max}")),
        }
    };
    let n = number("-n", 5, 100)?;
    if n == 0 {
        bail!("-n 0: at least one counted pair");
    }
    let warmup = number("--warmup", 1, 10)?;
    let b =
        split_words(&flag(flags, "--vs")?.context("`cargo xtask pair` needs --vs 'COMMAND B'")?)?;
    if b.is_empty() {
        bail!("--vs: an empty command");
    }
    Ok((n, warmup, a, b))
}

/// Splits a command line into words as a POSIX shell does, without expanding anything:
/// whitespace separates words, single quotes keep everything up to the next one, double
/// quotes keep everything but `\"` and `\\`, and a backslash outside quotes keeps the next
/// character.
fn split_words(line: &str) -> Result<Vec<String>> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => words.extend(word.take()),
            '\'' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => w.push(c),
                        None => bail!("--vs: a single quote is not closed in `{line}`"),
                    }
                }
            }
            '"' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => w.push(c),
                            Some(c) => {
                                w.push('\\');
                                w.push(c);
                            }
                            None => bail!("--vs: a double quote is not closed in `{line}`"),
                        },
                        Some(c) => w.push(c),
                        None => bail!("--vs: a double quote is not closed in `{line}`"),
                    }
                }
            }
            '\\' => match chars.next() {
                Some(c) => word.get_or_insert_with(String::new).push(c),
                None => bail!("--vs: a backslash ends `{line}`"),
            },
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    Ok(words)
}

/// Runs `cmd` to its end, its output discarded, and times it.
fn time(cmd: &[String]) -> Result<Timing> {
    let started = Instant::now();
    let child = Command::new(&cmd[0])
        .args(&cmd[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting `{}`", cmd.join(" ")))?;
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: rusage is plain data that wait4 fills; pid is our own unreaped child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let got = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let wall = started.elapsed().as_secs_f64();
    if got != pid {
        bail!(
            "waiting for `{}`: {}",
            cmd.join(" "),
            std::io::Error::last_os_error()
        );
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    };
    Ok(Timing {
        wall,
        user: secs(usage.ru_utime),
        sys: secs(usage.ru_stime),
        code,
    })
}

/// The median of `v` (the mean of the middle two for an even count).
fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/// Minimum, median and maximum, formatted.
fn spread(v: &[f64]) -> String {
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{:>9.3} {:>9.3} {:>9.3}", min, median(v), max)
}

pub fn run(args: &[String]) -> Result<()> {
    let (n, warmup, a, b) = parse(args)?;
    println!("A: {}\nB: {}", a.join(" "), b.join(" "));
    println!("{warmup} warm-up pair(s), {n} counted, A then B in each pair");
    let mut pairs: Vec<(Timing, Timing)> = Vec::with_capacity(n);
    for i in 0..warmup + n {
        let (ta, tb) = (time(&a)?, time(&b)?);
        let counted = i >= warmup;
        println!(
            "{} {:>3}: A {:.3} s (exit {}), B {:.3} s (exit {}), A/B {:.3}",
            if counted { "pair  " } else { "warmup" },
            if counted { i - warmup + 1 } else { i + 1 },
            ta.wall,
            ta.code,
            tb.wall,
            tb.code,
            ta.wall / tb.wall
        );
        if counted {
            pairs.push((ta, tb));
        }
    }
    let col = |f: &dyn Fn(&(Timing, Timing)) -> f64| pairs.iter().map(f).collect::<Vec<_>>();
    println!("{:<14} {:>9} {:>9} {:>9}", "", "min", "median", "max");
    for (name, v) in [
        ("A wall s", col(&|p| p.0.wall)),
        ("B wall s", col(&|p| p.1.wall)),
        ("A cpu s", col(&|p| p.0.user + p.0.sys)),
        ("B cpu s", col(&|p| p.1.user + p.1.sys)),
        ("A sys s", col(&|p| p.0.sys)),
        ("B sys s", col(&|p| p.1.sys)),
        ("A/B wall", col(&|p| p.0.wall / p.1.wall)),
        (
            "A/B cpu",
            col(&|p| (p.0.user + p.0.sys) / (p.1.user + p.1.sys)),
        ),
    ] {
        println!("{name:<14} {}", spread(&v));
    }
    if pairs.iter().any(|(x, y)| x.code != 0 || y.code != 0) {
        bail!("a command exited with a non-zero status (see the pairs above)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn flags_and_commands_are_read() {
        let (n, w, a, b) = parse(&strings(&[
            "-n",
            "3",
            "--vs",
            "sleep 0.1",
            "--",
            "true",
            "x",
        ]))
        .unwrap();
        assert_eq!((n, w), (3, 1));
        assert_eq!(a, strings(&["true", "x"]));
        assert_eq!(b, strings(&["sleep", "0.1"]));
        for bad in [
            &["--vs", "true"][..],
            &["--", "true"][..],
            &["--vs", "true", "--"][..],
            &["-n", "0", "--vs", "true", "--", "true"][..],
            &["-n", "x", "--vs", "true", "--", "true"][..],
            &["--vs", " ", "--", "true"][..],
        ] {
            assert!(parse(&strings(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_second_command_is_split_as_a_shell_would() {
        let w = split_words(r#"sh -c 'echo "a b"; exit' x\ y "q\"z" '' e"#).unwrap();
        assert_eq!(
            w,
            strings(&["sh", "-c", "echo \"a b\"; exit", "x y", "q\"z", "", "e"])
        );
        assert_eq!(split_words("  a   b ").unwrap(), strings(&["a", "b"]));
        for bad in ["sh -c 'x", "a \"b", "a \\"] {
            assert!(split_words(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn medians_and_timings() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        let t = time(&strings(&["sh", "-c", "exit 3"])).unwrap();
        assert_eq!(t.code, 3);
        let slow = time(&strings(&["sleep", "0.2"])).unwrap();
        assert!(slow.wall >= 0.2, "{slow:?}");
        assert!(time(&strings(&["/nonexistent/program"])).is_err());
    }
}
