//! A stdio log's lines: each is stored with a one-letter tag for the
//! stream it came from, as Buildbot's chunks are.

/// Where a line of a step's `stdio` log came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    /// The command's standard output (`o`).
    Stdout,
    /// The command's standard error (`e`).
    Stderr,
    /// What the master or worker says about the command (`h`).
    Header,
}

impl Stream {
    /// The tag that starts each stored line.
    pub fn tag(self) -> char {
        match self {
            Stream::Stdout => 'o',
            Stream::Stderr => 'e',
            Stream::Header => 'h',
        }
    }

    /// The stream of a tag.
    pub fn from_tag(tag: char) -> Option<Stream> {
        match tag {
            'o' => Some(Stream::Stdout),
            'e' => Some(Stream::Stderr),
            'h' => Some(Stream::Header),
            _ => None,
        }
    }

    /// A name for CSS classes and people: `stdout`, `stderr`, `header`.
    pub fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
            Stream::Header => "header",
        }
    }

    /// A line tagged with this stream.
    pub fn tagged(self, text: &str) -> String {
        let mut line = String::with_capacity(text.len() + 1);
        line.push(self.tag());
        line.push_str(text);
        line
    }
}

/// A stored stdio line's stream and text; an untagged line is stdout.
pub fn split(line: &str) -> (Stream, &str) {
    match line.chars().next().and_then(Stream::from_tag) {
        Some(stream) => (stream, &line[1..]),
        None => (Stream::Stdout, line),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_round_trip() {
        for s in [Stream::Stdout, Stream::Stderr, Stream::Header] {
            assert_eq!(Stream::from_tag(s.tag()), Some(s));
            assert_eq!(split(&s.tagged("x y")), (s, "x y"));
        }
        assert_eq!(split("plain"), (Stream::Stdout, "plain"));
        assert_eq!(split(""), (Stream::Stdout, ""));
        assert_eq!(split("é"), (Stream::Stdout, "é"), "a multi-byte first character is text");
    }
}
