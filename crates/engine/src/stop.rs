//! Stop sequences over streamed text: text that could be the start of a stop sequence is held
//! back until the next piece shows whether it is, so a client never sees part of a stop.

/// Finds the first stop sequence in text that arrives piece by piece.
#[derive(Debug, Clone, Default)]
pub struct StopMatcher {
    stops: Vec<String>,
    pending: String,
}

/// What [`StopMatcher::push`] lets through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Released {
    /// Text that can be sent now.
    pub text: String,
    /// A stop sequence was found: `text` ends right before it and generation should end.
    pub stopped: bool,
}

impl StopMatcher {
    /// A matcher for `stops` (empty strings are ignored).
    pub fn new(stops: impl IntoIterator<Item = String>) -> Self {
        Self {
            stops: stops.into_iter().filter(|s| !s.is_empty()).collect(),
            pending: String::new(),
        }
    }

    /// Adds the next piece of text.
    pub fn push(&mut self, piece: &str) -> Released {
        self.pending.push_str(piece);
        if self.stops.is_empty() {
            return self.release(self.pending.len(), false);
        }
        let first = self
            .stops
            .iter()
            .filter_map(|stop| self.pending.find(stop.as_str()))
            .min();
        if let Some(at) = first {
            return self.release(at, true);
        }
        let held = self
            .stops
            .iter()
            .map(|stop| longest_prefix_suffix(&self.pending, stop))
            .max()
            .unwrap_or(0);
        self.release(self.pending.len() - held, false)
    }

    /// Ends the text: whatever was held back is no stop sequence after all.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }

    fn release(&mut self, upto: usize, stopped: bool) -> Released {
        let text = self.pending[..upto].to_owned();
        if stopped {
            self.pending.clear();
        } else {
            self.pending.drain(..upto);
        }
        Released { text, stopped }
    }
}

/// Length of the longest proper prefix of `stop` that `text` ends with.
fn longest_prefix_suffix(text: &str, stop: &str) -> usize {
    (1..stop.len())
        .rev()
        .find(|&k| stop.is_char_boundary(k) && text.ends_with(&stop[..k]))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&str]) -> (Vec<String>, bool, String) {
        let mut m = StopMatcher::new(stops.iter().map(|s| (*s).to_owned()));
        let mut out = Vec::new();
        for p in pieces {
            let r = m.push(p);
            out.push(r.text);
            if r.stopped {
                return (out, true, String::new());
            }
        }
        let rest = m.finish();
        (out, false, rest)
    }

    #[test]
    fn without_stops_every_piece_passes_at_once() {
        assert_eq!(
            run(&[], &["a", "b"]),
            (vec!["a".into(), "b".into()], false, String::new())
        );
    }

    #[test]
    fn a_stop_split_over_pieces_is_held_back_then_cut() {
        let (out, stopped, _) = run(&["\n\n"], &["Paris.", "\n", "\nThe"]);
        assert_eq!(out, ["Paris.", "", ""]);
        assert!(stopped);
    }

    #[test]
    fn held_text_that_turns_out_not_to_stop_is_released() {
        let (out, stopped, rest) = run(&["END"], &["the E", "N", "D", "x EN"]);
        assert_eq!(out, ["the ", "", ""]);
        assert!(stopped);
        assert_eq!(rest, "");
        let (out, stopped, rest) = run(&["END"], &["the E", "Nx", " EN"]);
        assert_eq!(out, ["the ", "ENx", " "]);
        assert!(!stopped);
        assert_eq!(rest, "EN");
    }

    #[test]
    fn the_earliest_of_several_stops_wins() {
        let (out, stopped, _) = run(&["world", "lo w"], &["hello world"]);
        assert_eq!(out, ["hel"]);
        assert!(stopped);
    }

    #[test]
    fn text_before_the_stop_in_the_same_piece_is_kept() {
        let (out, stopped, _) = run(&["."], &["Hi", " there. More"]);
        assert_eq!(out, ["Hi", " there"]);
        assert!(stopped);
    }

    #[test]
    fn multibyte_stops_are_held_on_character_boundaries() {
        let (out, stopped, rest) = run(&["ém"], &["café", " é", "t"]);
        assert_eq!(out, ["caf", "é ", "ét"]);
        assert!(!stopped);
        assert_eq!(rest, "");
    }
}
