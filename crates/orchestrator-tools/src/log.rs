//! A step's log: the lines its command or tool writes, kept by the engine
//! (bounded, numbered, served at `GET /executions/{id}/steps/{step}/logs`).

/// Where a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
    /// The tool's (or the engine's) own line.
    Log,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
            Stream::Log => "log",
        }
    }
}

/// Takes a step's lines. Never blocks: a sink keeps what its bound allows.
pub trait LogSink: Send + Sync + std::fmt::Debug {
    fn line(&self, stream: Stream, text: &str);
}

/// Longest line kept whole; longer ones are cut into pieces of this size.
pub const MAX_LINE_BYTES: usize = 8 * 1024;

/// Cuts a byte stream into lines for a sink: complete lines as they come,
/// the unfinished rest when the stream ends.
#[derive(Debug, Default)]
pub struct LineSplitter {
    partial: Vec<u8>,
}

impl LineSplitter {
    pub fn feed(&mut self, mut bytes: &[u8], mut emit: impl FnMut(&str)) {
        while !bytes.is_empty() {
            let room = MAX_LINE_BYTES - self.partial.len();
            let window = &bytes[..bytes.len().min(room)];
            match window.iter().position(|&b| b == b'\n') {
                Some(end) => {
                    self.partial.extend_from_slice(&window[..end]);
                    self.emit(&mut emit);
                    bytes = &bytes[end + 1..];
                }
                None => {
                    self.partial.extend_from_slice(window);
                    bytes = &bytes[window.len()..];
                    if self.partial.len() >= MAX_LINE_BYTES {
                        self.emit(&mut emit);
                    }
                }
            }
        }
    }

    pub fn finish(&mut self, mut emit: impl FnMut(&str)) {
        if !self.partial.is_empty() {
            self.emit(&mut emit);
        }
    }

    fn emit(&mut self, emit: &mut impl FnMut(&str)) {
        let text = String::from_utf8_lossy(&self.partial);
        emit(text.trim_end_matches('\r'));
        self.partial.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_cut_at_newlines_and_at_the_size_bound() {
        let mut s = LineSplitter::default();
        let mut out = Vec::new();
        s.feed(b"one\ntw", |l| out.push(l.to_string()));
        s.feed(b"o\r\n\nthree", |l| out.push(l.to_string()));
        s.finish(|l| out.push(l.to_string()));
        assert_eq!(out, ["one", "two", "", "three"]);
        let mut out = Vec::new();
        s.feed(&vec![b'x'; MAX_LINE_BYTES + 5], |l| out.push(l.len()));
        s.finish(|l| out.push(l.len()));
        assert_eq!(out, [MAX_LINE_BYTES, 5]);
    }
}
