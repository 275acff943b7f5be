//! Aligned plain-text tables and key-value lists.

use std::fmt;

/// How a column's cells line up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Align {
    /// Text.
    Left,
    /// Numbers.
    Right,
}

/// A table with a header row; columns are two spaces apart, and no line ends with spaces.
#[derive(Debug, Clone)]
pub(crate) struct Table {
    headers: Vec<&'static str>,
    align: Vec<Align>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these columns (header, alignment).
    pub(crate) fn new(columns: &[(&'static str, Align)]) -> Self {
        Table {
            headers: columns.iter().map(|(header, _)| *header).collect(),
            align: columns.iter().map(|(_, align)| *align).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row: missing cells are empty, extra cells are dropped, and control characters
    /// (a newline in an error message...) become spaces so that a row stays on one line.
    pub(crate) fn row(&mut self, cells: Vec<String>) {
        let mut cells: Vec<String> = cells.into_iter().map(|cell| one_line(&cell)).collect();
        cells.resize(self.headers.len(), String::new());
        self.rows.push(cells);
    }

    fn widths(&self) -> Vec<usize> {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| width(h)).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(width(cell));
            }
        }
        widths
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let widths = self.widths();
        let headers: Vec<String> = self.headers.iter().map(|h| (*h).to_owned()).collect();
        for row in std::iter::once(&headers).chain(&self.rows) {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                let pad = widths[i].saturating_sub(width(cell));
                match self.align[i] {
                    Align::Left => {
                        line.push_str(cell);
                        line.extend(std::iter::repeat_n(' ', pad));
                    }
                    Align::Right => {
                        line.extend(std::iter::repeat_n(' ', pad));
                        line.push_str(cell);
                    }
                }
            }
            writeln!(f, "{}", line.trim_end())?;
        }
        Ok(())
    }
}

/// Writes `label  value` lines with the values aligned (values may span lines: the next lines
/// are indented to the value column).
pub(crate) fn write_fields(f: &mut fmt::Formatter<'_>, fields: &[(&str, String)]) -> fmt::Result {
    let column = fields
        .iter()
        .map(|(label, _)| width(label))
        .max()
        .unwrap_or(0)
        + 2;
    for (label, value) in fields {
        let mut lines = value.lines();
        let first = lines.next().unwrap_or("");
        let line = format!("{label:<column$}{first}");
        writeln!(f, "{}", line.trim_end())?;
        for more in lines {
            writeln!(f, "{:column$}{more}", "")?;
        }
    }
    Ok(())
}

/// Cuts `text` to at most `max` characters, marking a cut with `...`; control characters
/// become spaces.
pub(crate) fn shorten(text: &str, max: usize) -> String {
    let text = one_line(text);
    if width(&text) <= max {
        return text;
    }
    let kept: String = text.chars().take(max.saturating_sub(3)).collect();
    format!("{}...", kept.trim_end())
}

fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// The width of a cell: its characters (tables hold ids, names, numbers and short messages).
fn width(text: &str) -> usize {
    text.chars().count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_and_lines_have_no_trailing_spaces() {
        let mut table = Table::new(&[
            ("NAME", Align::Left),
            ("COUNT", Align::Right),
            ("NOTE", Align::Left),
        ]);
        table.row(vec!["alpha".into(), "7".into(), "".into()]);
        table.row(vec!["b".into(), "1234567".into(), "two\nlines".into()]);
        assert_eq!(
            table.to_string(),
            "NAME     COUNT  NOTE\n\
             alpha        7\n\
             b      1234567  two lines\n"
        );
    }

    #[test]
    fn an_empty_table_is_its_header() {
        let table = Table::new(&[("ID", Align::Left), ("STATE", Align::Left)]);
        assert_eq!(table.to_string(), "ID  STATE\n");
    }

    #[test]
    fn short_rows_are_padded() {
        let mut table = Table::new(&[("A", Align::Left), ("B", Align::Left)]);
        table.row(vec!["x".into()]);
        assert_eq!(table.to_string(), "A  B\nx\n");
    }

    #[test]
    fn long_text_is_shortened() {
        assert_eq!(shorten("short", 10), "short");
        assert_eq!(shorten("exactly10!", 10), "exactly10!");
        assert_eq!(shorten("this is far too long", 10), "this is...");
        assert_eq!(shorten("a\nb", 10), "a b");
    }

    struct Fields(Vec<(&'static str, String)>);

    impl fmt::Display for Fields {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write_fields(f, &self.0)
        }
    }

    #[test]
    fn fields_align_their_values() {
        let fields = Fields(vec![
            ("state", "failed".into()),
            ("last error", "boom\nsecond line".into()),
            ("output", "".into()),
        ]);
        assert_eq!(
            fields.to_string(),
            "state       failed\n\
             last error  boom\n            second line\n\
             output\n"
        );
    }
}
