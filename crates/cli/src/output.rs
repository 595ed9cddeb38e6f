//! Writing results to stdout, and keeping error messages on one line.

use std::io::{ErrorKind, Write};

/// Writes `text` to stdout. A closed pipe (`ferrolm inspect m | head`) is not
/// an error: the reader has all it wanted.
pub fn print_stdout(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(err) if err.kind() != ErrorKind::BrokenPipe => {
            Err(anyhow::Error::new(err).context("cannot write to stdout"))
        }
        _ => Ok(()),
    }
}

/// An error and its causes on one line, `outer: cause: root cause`. A cause
/// whose text the message already ends with is left out: some errors repeat
/// their source in their own text.
pub fn error_line(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let text = one_line(&cause.to_string());
        if line.is_empty() {
            line = text;
        } else if !line.ends_with(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
    }
    line
}

/// Joins the lines of a message so that an error is always one line on stderr.
pub fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::{error_line, one_line};

    #[derive(Debug)]
    struct Repeating(std::io::Error);

    impl std::fmt::Display for Repeating {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "model.gguf: {}", self.0)
        }
    }

    impl std::error::Error for Repeating {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn causes_are_joined_without_repeating_themselves() {
        let io = std::io::Error::other("bad magic");
        let err = anyhow::Error::new(Repeating(io)).context("cannot inspect");
        assert_eq!(error_line(&err), "cannot inspect: model.gguf: bad magic");
        let err = anyhow::anyhow!("root\ncause").context("outer");
        assert_eq!(error_line(&err), "outer: root cause");
    }

    #[test]
    fn multi_line_messages_become_one_line() {
        assert_eq!(
            one_line("cannot open x: \n  bad magic\n\nend"),
            "cannot open x: bad magic end"
        );
        assert_eq!(one_line("already one line"), "already one line");
    }
}

/// A mistake in how a command was called rather than in what it was given: `ferrolm` exits
/// with 2 for it, as for the usage errors the argument parser finds.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}
