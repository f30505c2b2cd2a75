//! Identity labels in the CSV formats of the field: Kaggle humpback `Image,Id`,
//! Happywhale `image,species,individual_id`, NOAA right whale `Image,whaleID`, and
//! whaleid's generic `image,individual_id[,species,side,part]`.
//!
//! Parsing never fails on a bad row: the row is reported with its line and the
//! rest is kept. Only a file without the needed columns is refused as a whole.

use std::collections::HashMap;

use serde::Serialize;

use crate::base::vocabulary::{Part, Side};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LabelFormat {
    KaggleHumpback,
    Happywhale,
    NoaaRightWhale,
    Generic,
}

impl LabelFormat {
    pub fn name(self) -> &'static str {
        match self {
            LabelFormat::KaggleHumpback => "Kaggle humpback (Image,Id)",
            LabelFormat::Happywhale => "Happywhale (image,species,individual_id)",
            LabelFormat::NoaaRightWhale => "NOAA right whale (Image,whaleID)",
            LabelFormat::Generic => "generic (image,individual_id,...)",
        }
    }

    /// The species a format implies when its rows do not say.
    pub fn species(self) -> Option<&'static str> {
        match self {
            LabelFormat::KaggleHumpback => Some("humpback_whale"),
            LabelFormat::NoaaRightWhale => Some("right_whale"),
            _ => None,
        }
    }
}

/// The label Kaggle's humpback set used for photos of no known individual.
pub const UNLABELLED: &str = "new_whale";

#[derive(Debug, Clone, PartialEq)]
pub struct LabelRow {
    /// 1-based line in the file.
    pub line: usize,
    pub image: String,
    /// `None`: the photo shows an individual nobody has identified (`new_whale`, empty).
    pub individual: Option<String>,
    pub species: Option<String>,
    pub side: Option<Side>,
    pub part: Option<Part>,
    /// Other columns, kept as photo tags `column=value`.
    pub extra: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RowProblem {
    pub line: usize,
    pub problem: String,
}

#[derive(Debug, Clone)]
pub struct LabelTable {
    pub format: LabelFormat,
    pub rows: Vec<LabelRow>,
    pub problems: Vec<RowProblem>,
    /// Rows repeating an earlier row exactly; skipped.
    pub duplicates: usize,
}

fn normalise_header(h: &str) -> String {
    h.trim_start_matches('\u{feff}').trim().to_ascii_lowercase().replace([' ', '-'], "_")
}

const IMAGE_COLUMNS: &[&str] = &["image", "image_name", "file", "filename", "file_name", "photo"];
const ID_COLUMNS: &[&str] = &["individual_id", "individual", "individualid", "whaleid", "whale_id", "id"];

/// Parses a labels CSV. Errors only when the file as a whole cannot be labels.
pub fn parse_labels(bytes: &[u8]) -> Result<LabelTable, String> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut reader = csv::ReaderBuilder::new().flexible(true).has_headers(false).from_reader(bytes);
    let mut records = reader.byte_records();
    let header = match records.next() {
        None => return Err("the file is empty: expected a header such as 'image,individual_id'".into()),
        Some(Err(e)) => return Err(format!("cannot read the header: {e}")),
        Some(Ok(h)) => h,
    };
    let header: Vec<String> = header
        .iter()
        .map(|f| std::str::from_utf8(f).map(normalise_header))
        .collect::<Result<_, _>>()
        .map_err(|_| "the header is not valid UTF-8 text".to_string())?;
    let find = |names: &[&str]| names.iter().find_map(|n| header.iter().position(|h| h == n));
    let image_col = find(IMAGE_COLUMNS).ok_or_else(|| {
        format!(
            "no image column in header [{}]: expected one of Image,Id (Kaggle humpback), \
             image,species,individual_id (Happywhale), Image,whaleID (NOAA right whale) \
             or image,individual_id[,species,side,part]",
            header.join(",")
        )
    })?;
    let id_col = find(ID_COLUMNS).ok_or_else(|| {
        format!("no individual column in header [{}]: expected individual_id, Id or whaleID", header.join(","))
    })?;
    let species_col = find(&["species"]);
    let side_col = find(&["side", "viewpoint"]);
    let part_col = find(&["part"]);
    let format = match (header[id_col].as_str(), species_col) {
        ("id", _) if header.len() == 2 => LabelFormat::KaggleHumpback,
        ("whaleid" | "whale_id", _) => LabelFormat::NoaaRightWhale,
        ("individual_id", Some(_)) if header.len() == 3 => LabelFormat::Happywhale,
        _ => LabelFormat::Generic,
    };
    let known = [Some(image_col), Some(id_col), species_col, side_col, part_col];

    let mut table = LabelTable { format, rows: Vec::new(), problems: Vec::new(), duplicates: 0 };
    let mut seen: HashMap<String, (usize, Option<String>)> = HashMap::new();
    // csv's own line numbers drift with CRLF line ends; count the newlines before each record.
    let mut lines = LineCounter::default();
    for record in records {
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map(|p| lines.line_at(bytes, p.byte() as usize)).unwrap_or(0);
                table.problems.push(RowProblem { line, problem: format!("unreadable row: {e}") });
                continue;
            }
        };
        let line = record.position().map(|p| lines.line_at(bytes, p.byte() as usize)).unwrap_or(0);
        if record.iter().all(|f| f.iter().all(u8::is_ascii_whitespace)) {
            continue; // blank line
        }
        let mut fields = Vec::with_capacity(record.len());
        let mut bad_utf8 = false;
        for f in record.iter() {
            match std::str::from_utf8(f) {
                Ok(s) => fields.push(s.trim().to_string()),
                Err(_) => bad_utf8 = true,
            }
        }
        if bad_utf8 {
            table.problems.push(RowProblem { line, problem: "not valid UTF-8 text (save the CSV as UTF-8)".into() });
            continue;
        }
        if fields.len() <= image_col.max(id_col) {
            table.problems.push(RowProblem {
                line,
                problem: format!("has {} column(s), the header has {}", fields.len(), header.len()),
            });
            continue;
        }
        let image = fields[image_col].clone();
        if image.is_empty() {
            table.problems.push(RowProblem { line, problem: "no image name".into() });
            continue;
        }
        let id = fields[id_col].clone();
        let individual = (!id.is_empty() && id != UNLABELLED).then_some(id);
        let get = |col: Option<usize>| col.and_then(|c| fields.get(c)).filter(|v| !v.is_empty()).cloned();
        let side = match get(side_col).map(|s| s.parse::<Side>()) {
            Some(Err(e)) => {
                table.problems.push(RowProblem { line, problem: e });
                continue;
            }
            Some(Ok(s)) => Some(s),
            None => None,
        };
        let part = match get(part_col).map(|s| s.parse::<Part>()) {
            Some(Err(e)) => {
                table.problems.push(RowProblem { line, problem: e });
                continue;
            }
            Some(Ok(p)) => Some(p),
            None => None,
        };
        match seen.get(&image) {
            Some((_, earlier)) if *earlier == individual => {
                table.duplicates += 1;
                continue;
            }
            Some((first_line, earlier)) => {
                table.problems.push(RowProblem {
                    line,
                    problem: format!(
                        "{image} is labelled {} here but {} on line {first_line}; kept line {first_line}",
                        individual.as_deref().unwrap_or(UNLABELLED),
                        earlier.as_deref().unwrap_or(UNLABELLED)
                    ),
                });
                continue;
            }
            None => {}
        }
        seen.insert(image.clone(), (line, individual.clone()));
        let extra = header
            .iter()
            .enumerate()
            .filter(|(i, _)| !known.contains(&Some(*i)))
            .filter_map(|(i, h)| Some((h.clone(), fields.get(i).filter(|v| !v.is_empty())?.clone())))
            .collect();
        table.rows.push(LabelRow { line, image, individual, species: get(species_col), side, part, extra });
    }
    Ok(table)
}

/// 1-based line numbers of increasing byte offsets, counted incrementally.
#[derive(Default)]
struct LineCounter {
    offset: usize,
    line: usize,
}

impl LineCounter {
    fn line_at(&mut self, bytes: &[u8], offset: usize) -> usize {
        // After a CR, csv reports the record as starting on the LF that completes the line end.
        let offset = if bytes.get(offset) == Some(&b'\n') { offset + 1 } else { offset }.min(bytes.len());
        if offset < self.offset {
            *self = LineCounter::default();
        }
        self.line += bytes[self.offset..offset].iter().filter(|&&b| b == b'\n').count();
        self.offset = offset;
        self.line + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_four_formats_are_recognised() {
        let t = parse_labels(b"Image,Id\na.jpg,w_1\nb.jpg,new_whale\n").unwrap();
        assert_eq!(t.format, LabelFormat::KaggleHumpback);
        assert_eq!(t.rows[1].individual, None);
        let t = parse_labels(b"image,species,individual_id\na.jpg,beluga,x1\n").unwrap();
        assert_eq!(t.format, LabelFormat::Happywhale);
        assert_eq!(t.rows[0].species.as_deref(), Some("beluga"));
        let t = parse_labels(b"Image,whaleID\nw_1.jpg,whale_48490\n").unwrap();
        assert_eq!(t.format, LabelFormat::NoaaRightWhale);
        let t =
            parse_labels(b"image,individual_id,species,side,role\na.jpg,F1,bottlenose_dolphin,left,query\n").unwrap();
        assert_eq!(t.format, LabelFormat::Generic);
        assert_eq!(t.rows[0].side, Some(Side::Left));
        assert_eq!(t.rows[0].extra, vec![("role".to_string(), "query".to_string())]);
    }

    #[test]
    fn bom_crlf_duplicates_and_bad_rows_are_handled_row_by_row() {
        let mut csv = b"\xEF\xBB\xBFImage,Id\r\na.jpg,w_1\r\na.jpg,w_1\r\nb.jpg\r\n".to_vec();
        csv.extend_from_slice(b"c\xff.jpg,w_2\r\nd.jpg,w_3\r\na.jpg,w_9\r\n");
        let t = parse_labels(&csv).unwrap();
        assert_eq!(t.rows.iter().map(|r| r.image.as_str()).collect::<Vec<_>>(), ["a.jpg", "d.jpg"]);
        assert_eq!(t.duplicates, 1);
        let problems: Vec<_> = t.problems.iter().map(|p| (p.line, p.problem.as_str())).collect();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert_eq!(problems[0].0, 4);
        assert!(problems[1].1.contains("UTF-8"));
        assert!(problems[2].1.contains("line 2"));
    }

    #[test]
    fn a_csv_without_the_needed_columns_is_refused_with_what_was_expected() {
        let err = parse_labels(b"name,whale\na.jpg,w_1\n").unwrap_err();
        assert!(err.contains("no image column") && err.contains("Image,Id"), "{err}");
        assert!(parse_labels(b"").unwrap_err().contains("empty"));
        assert!(parse_labels(b"image,notes\n").unwrap_err().contains("no individual column"));
    }
}
