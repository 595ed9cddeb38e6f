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
    use super::one_line;

    #[test]
    fn multi_line_messages_become_one_line() {
        assert_eq!(
            one_line("cannot open x: \n  bad magic\n\nend"),
            "cannot open x: bad magic end"
        );
        assert_eq!(one_line("already one line"), "already one line");
    }
}
