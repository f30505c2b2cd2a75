//! Boxes from YOLO label files and COCO JSON. Like the label parser, a bad line or
//! annotation is reported and skipped; the rest is kept.

use serde::Deserialize;

use super::labels::RowProblem;

/// One YOLO line: class and normalised centre/size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct YoloBox {
    pub class: usize,
    pub cx: f64,
    pub cy: f64,
    pub w: f64,
    pub h: f64,
}

/// Parses a YOLO label file (`class cx cy w h` per line, an optional confidence after).
pub fn parse_yolo(text: &str) -> (Vec<YoloBox>, Vec<RowProblem>) {
    let mut boxes = Vec::new();
    let mut problems = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() != 5 && fields.len() != 6 {
            problems.push(RowProblem {
                line: line_no,
                problem: format!("expected 'class cx cy w h', found {} field(s)", fields.len()),
            });
            continue;
        }
        let Ok(class) = fields[0].parse::<usize>() else {
            problems
                .push(RowProblem { line: line_no, problem: format!("class '{}' is not a whole number", fields[0]) });
            continue;
        };
        let numbers: Result<Vec<f64>, _> = fields[1..5].iter().map(|f| f.parse::<f64>()).collect();
        match numbers {
            Ok(n) if n.iter().all(|v| v.is_finite()) => {
                boxes.push(YoloBox { class, cx: n[0], cy: n[1], w: n[2], h: n[3] })
            }
            _ => problems.push(RowProblem { line: line_no, problem: "coordinates are not numbers".into() }),
        }
    }
    (boxes, problems)
}

/// Class names from a YOLO `classes.txt` (one per line) or a `data.yaml` `names:` entry.
pub fn parse_class_names(text: &str) -> Vec<String> {
    if let Some(rest) = text.lines().find_map(|l| l.trim().strip_prefix("names:")) {
        let rest = rest.trim();
        if rest.starts_with('[') {
            return rest
                .trim_matches(|c| c == '[' || c == ']')
                .split(',')
                .map(|s| s.trim().trim_matches(|c| c == '\'' || c == '"').to_string())
                .filter(|s| !s.is_empty())
                .collect();
        }
        // Block form: "  0: fluke" or "  - fluke" on the following lines.
        return text
            .lines()
            .skip_while(|l| !l.trim().starts_with("names:"))
            .skip(1)
            .take_while(|l| l.starts_with(' ') || l.starts_with('\t') || l.trim().starts_with('-'))
            .map(|l| {
                let l = l.trim().trim_start_matches('-').trim();
                let l = l.split_once(':').map(|(_, v)| v).unwrap_or(l);
                l.trim().trim_matches(|c| c == '\'' || c == '"').to_string()
            })
            .filter(|s| !s.is_empty())
            .collect();
    }
    text.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_string).collect()
}

#[derive(Debug, Clone, PartialEq)]
pub struct CocoImage {
    pub id: i64,
    pub file_name: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CocoBox {
    pub image_id: i64,
    pub category: Option<String>,
    /// `[x, y, w, h]` in pixels.
    pub bbox: [f64; 4],
    /// whaleid's own attributes, present in files whaleid exported.
    pub individual: Option<String>,
    pub side: Option<String>,
    pub status: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct CocoFile {
    pub images: Vec<CocoImage>,
    pub boxes: Vec<CocoBox>,
    pub problems: Vec<RowProblem>,
}

#[derive(Deserialize)]
struct RawCoco {
    images: Vec<serde_json::Value>,
    #[serde(default)]
    annotations: Vec<serde_json::Value>,
    #[serde(default)]
    categories: Vec<serde_json::Value>,
}

/// Parses a COCO JSON file. `line` in the problems is the item's index in its list (1-based).
pub fn parse_coco(bytes: &[u8]) -> Result<CocoFile, String> {
    let raw: RawCoco = serde_json::from_slice(bytes).map_err(|e| format!("not COCO JSON: {e}"))?;
    let mut out = CocoFile::default();
    let categories: std::collections::HashMap<i64, String> = raw
        .categories
        .iter()
        .filter_map(|c| Some((c.get("id")?.as_i64()?, c.get("name")?.as_str()?.to_string())))
        .collect();
    for (i, img) in raw.images.iter().enumerate() {
        match (img.get("id").and_then(|v| v.as_i64()), img.get("file_name").and_then(|v| v.as_str())) {
            (Some(id), Some(name)) => out.images.push(CocoImage { id, file_name: name.to_string() }),
            _ => out.problems.push(RowProblem { line: i + 1, problem: "image entry without id or file_name".into() }),
        }
    }
    for (i, ann) in raw.annotations.iter().enumerate() {
        let problem = |p: &str| RowProblem { line: i + 1, problem: format!("annotation {}: {p}", i + 1) };
        let Some(image_id) = ann.get("image_id").and_then(|v| v.as_i64()) else {
            out.problems.push(problem("no image_id"));
            continue;
        };
        let bbox: Option<Vec<f64>> =
            ann.get("bbox").and_then(|b| b.as_array()).map(|a| a.iter().filter_map(|v| v.as_f64()).collect());
        let bbox = match bbox {
            Some(b) if b.len() == 4 => [b[0], b[1], b[2], b[3]],
            _ => {
                out.problems.push(problem("bbox is not [x, y, width, height]"));
                continue;
            }
        };
        let attr = |key: &str| {
            ann.get("attributes")
                .and_then(|a| a.get(key))
                .or_else(|| ann.get(key))
                .and_then(|v| v.as_str())
                .map(str::to_string)
        };
        out.boxes.push(CocoBox {
            image_id,
            category: ann.get("category_id").and_then(|v| v.as_i64()).and_then(|c| categories.get(&c).cloned()),
            bbox,
            individual: attr("individual_id"),
            side: attr("side"),
            status: attr("status"),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yolo_lines_are_parsed_and_bad_lines_reported() {
        let (boxes, problems) =
            parse_yolo("0 0.5 0.5 0.2 0.1\n\n1 0.1 0.2 0.3 0.4 0.9\nfluke 1 2 3 4\n0 a b c d\n0 1 2\n");
        assert_eq!(boxes.len(), 2);
        assert_eq!(boxes[1].class, 1);
        assert_eq!(problems.iter().map(|p| p.line).collect::<Vec<_>>(), [4, 5, 6]);
    }

    #[test]
    fn class_names_come_from_classes_txt_or_data_yaml() {
        assert_eq!(parse_class_names("fluke\ndorsal_fin\n"), ["fluke", "dorsal_fin"]);
        assert_eq!(parse_class_names("path: x\nnames: ['fluke', 'head']\n"), ["fluke", "head"]);
        assert_eq!(parse_class_names("nc: 2\nnames:\n  0: fluke\n  1: head\n"), ["fluke", "head"]);
    }

    #[test]
    fn coco_boxes_and_problems() {
        let json = br#"{"images":[{"id":1,"file_name":"a.jpg"},{"id":2}],
            "annotations":[{"image_id":1,"category_id":3,"bbox":[1,2,3,4],"attributes":{"individual_id":"F1"}},
                           {"image_id":1,"bbox":[1,2]}],
            "categories":[{"id":3,"name":"dorsal_fin"}]}"#;
        let c = parse_coco(json).unwrap();
        assert_eq!(c.images.len(), 1);
        assert_eq!(c.boxes.len(), 1);
        assert_eq!(c.boxes[0].category.as_deref(), Some("dorsal_fin"));
        assert_eq!(c.boxes[0].individual.as_deref(), Some("F1"));
        assert_eq!(c.problems.len(), 2);
        assert!(parse_coco(b"{not json").unwrap_err().contains("not COCO JSON"));
    }
}
